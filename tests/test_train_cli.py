"""train.py as a user runs it: the quickstart, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*args, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, 'train.py', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_quickstart_reaches_97_percent_on_digits(data_dir, tmp_path):
  workdir = tmp_path / 'quickstart'
  result = _train('--config=configs/quickstart.py', f'--workdir={workdir}',
                  f'--config.data_dir={data_dir}')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  final = records[-1]
  assert final['step'] == 660
  assert final['eval/accuracy'] >= 0.97
  assert 'eval/top5' in final
  assert 'step 660/660' in result.stderr  # The per-period log line.
  with open(workdir / 'config.json') as f:
    assert json.load(f)['dataset'] == 'digits'


@pytest.mark.parametrize('override,message', [
    ('--config.model=resnet51', "Unknown model 'resnet51'. Known models:"),
    ('--config.dataset=cifar11', "Unknown dataset 'cifar11'. Known datasets:"),
    ('--config.learnig_rate=0.1', 'learnig_rate'),
    ('--config.batch_size=many', 'batch_size'),
])
def test_bad_command_line_exits_with_one_clear_error(override, message,
                                                     data_dir, tmp_path):
  result = _train('--config=configs/quickstart.py', f'--workdir={tmp_path}',
                  f'--config.data_dir={data_dir}', override)
  assert result.returncode != 0
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  result = _train('--config=configs/resnet50.py', f'--workdir={tmp_path}',
                  f'--config.data_dir={tmp_path}/none')
  assert result.returncode != 0
  assert 'tfds build imagenet2012' in result.stderr
  assert '--config.dataset=digits --config.image_size=64' in result.stderr
  assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('where', ['under a file', 'read-only filesystem'])
def test_unwritable_workdir_exits_with_one_clear_error(where, data_dir,
                                                       tmp_path):
  blocker = tmp_path / 'notes.txt'
  blocker.write_text('keep me')
  # /sys refuses new entries even to root, for whom permission bits do not.
  workdir = (f'{blocker}/run' if where == 'under a file'
             else '/sys/jaxcnn_unwritable_run')
  result = _train('--config=configs/quickstart.py', f'--workdir={workdir}',
                  f'--config.data_dir={data_dir}')
  assert result.returncode != 0
  assert f'Cannot write to --workdir={workdir}' in result.stderr
  assert 'choose a writable directory' in result.stderr
  assert 'Traceback' not in result.stderr
  assert blocker.read_text() == 'keep me'
  assert not os.path.exists(workdir)
