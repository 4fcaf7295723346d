"""train.py as a user runs it: the quickstart, and one-line errors."""

import json
import os
import socket
import subprocess
import sys

import pytest

from configs import quickstart

pytestmark = pytest.mark.cost_seconds(210)

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


QUICKSTART = '--config=configs/quickstart.py'
TWO_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
CONVERT = ['-m', 'jaxcnn.convert', '--model=resnet18',
           '--weights={fresh}/resnet18.pth']
# Each row: the command (train.py's arguments, or CONVERT's), the fragments
# its one line must hold (naming the field), and extra environment. {run} is
# a workdir holding a run, {fresh} a path that must not be created, {file} a
# file; {syntax} and {raises} are recipes that fail to load.
BAD_INPUTS = {
    'config file missing': (['--config=configs/nope.py', '--workdir={fresh}'],
                            ['--config=configs/nope.py: no such file']),
    'config syntax error': (['--config={syntax}', '--workdir={fresh}'],
                            ['--config={syntax}: SyntaxError: invalid syntax '
                             '(line 2)']),
    'config raises': (['--config={raises}', '--workdir={run}'],
                      ["--config={raises}: NameError: name 'batch' is not "
                       'defined (line 4)']),
    'wrong type': ([QUICKSTART, '--workdir={run}', '--config.batch_size=many'],
                   ['flag --config.batch_size=many: invalid literal']),
    'misspelt field': ([QUICKSTART, '--workdir={run}',
                        '--config.learnig_rate=0.1'],
                       ['unknown config field learnig_rate (did you mean '
                        'learning_rate?)']),
    'no workdir': ([QUICKSTART], ['Flag --workdir must have a value']),
    'workdir is a file': ([QUICKSTART, '--workdir={file}'],
                          ['Cannot write to --workdir={file} (it is a file); '
                           'choose a writable directory']),
    'unexpected argument': ([QUICKSTART, '--workdir={fresh}', 'extra'],
                            ['unexpected arguments: extra']),
    'num_processes type': ([QUICKSTART, '--workdir={fresh}',
                            '--num_processes=two'],
                           ['flag --num_processes=two']),
    'num_processes negative': ([QUICKSTART, '--workdir={fresh}',
                                '--num_processes=-1'],
                               ['--num_processes=-1: must be a non-negative '
                                'integer']),
    'process_id out of range': ([QUICKSTART, '--workdir={fresh}',
                                 '--coordinator_address=127.0.0.1:9',
                                 '--num_processes=2', '--process_id=2'],
                                ['--process_id=2: must be in [0, '
                                 '--num_processes)']),
    'no coordinator': ([QUICKSTART, '--workdir={fresh}', '--num_processes=2',
                        '--process_id=0'],
                       ['--num_processes=2 and --process_id=0: need '
                        '--coordinator_address=HOST:PORT']),
    'coordinator without port': ([QUICKSTART, '--workdir={fresh}',
                                  '--coordinator_address=localhost',
                                  '--num_processes=2', '--process_id=0'],
                                 ['--coordinator_address=localhost: must be '
                                  'HOST:PORT']),
    'timeout': ([QUICKSTART, '--workdir={fresh}', '--distributed_timeout=0'],
                ['--distributed_timeout=0: must be a positive number']),
    'batch zero': ([QUICKSTART, '--workdir={run}', '--config.batch_size=0'],
                   ['--config.batch_size=0: must be a positive integer']),
    'batch negative': ([QUICKSTART, '--workdir={fresh}',
                        '--config.batch_size=-8'],
                       ['--config.batch_size=-8: must be a positive integer']),
    'log_every_steps zero': ([QUICKSTART, '--workdir={run}',
                              '--config.log_every_steps=0'],
                             ['--config.log_every_steps=0: must be a positive '
                              'integer']),
    'keep_checkpoints zero': ([QUICKSTART, '--workdir={fresh}',
                               '--config.keep_checkpoints=0'],
                              ['--config.keep_checkpoints=0: must be a '
                               'positive integer']),
    'data_dir is a file': ([QUICKSTART, '--workdir={fresh}',
                            '--config.data_dir={file}'],
                           ["--config.data_dir='{file}': is a file, not a "
                            'directory']),
    'labels outside num_classes': ([QUICKSTART, '--workdir={run}',
                                    '--config.num_classes=3'],
                                   ['--config.num_classes=3: digits has 10 '
                                    'classes']),
    'unknown model': ([QUICKSTART, '--workdir={fresh}',
                       '--config.model=resnet51'],
                      ["--config.model='resnet51': must be one of alexnet"]),
    'unknown dataset': ([QUICKSTART, '--workdir={fresh}',
                         '--config.dataset=cifar11'],
                        ["--config.dataset='cifar11': must be one of"]),
    'every problem at once': ([QUICKSTART, '--workdir={file}',
                               '--config.batch_size=0',
                               '--config.optimizer=adam',
                               '--config.freeze=(', '--distributed_timeout=0'],
                              ['--distributed_timeout=0', '--workdir={file}',
                               '--config.batch_size=0',
                               "--config.optimizer='adam'",
                               "--config.freeze='('"]),
    'batch not divisible by devices': ([QUICKSTART, '--workdir={fresh}',
                                        '--config.batch_size=33'],
                                       ['--config.batch_size=33: must be '
                                        'divisible by the device count (2)'],
                                       TWO_DEVICES),
    'workdir of another run': ([QUICKSTART, '--workdir={run}',
                                '--config.learning_rate=0.5'],
                               ['{run} holds a run with a different config '
                                '(learning_rate: 0.1 -> 0.5)']),
    'workdir in use': ([QUICKSTART, '--workdir={busy}'],
                       ['{busy} is in use by another run (pid {pid} on ']),
    'convert out is a file': ([*CONVERT, '--out={file}'],
                              ['Cannot write to --out={file} (it is a file)']),
    'convert out not empty': ([*CONVERT, '--out={run}'],
                              ['Cannot write to --out={run} (it exists and is '
                               'not empty)']),
}


def _snapshot(root) -> dict[str, tuple[int, bytes]]:
  """Every file under `root`: modification time and contents."""
  files = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        files[path] = (os.stat(path).st_mtime_ns, f.read())
  return files


@pytest.fixture
def inputs(tmp_path):
  """The paths the table's commands name, with a run and files to keep."""
  run = tmp_path / 'run'
  (run / 'checkpoints' / '20').mkdir(parents=True)
  (run / 'checkpoints' / '20' / 'state').write_bytes(b'weights')
  (run / 'config.json').write_text(quickstart.get_config().to_json())
  (run / 'metrics.jsonl').write_text('{"step": 20, "eval/accuracy": 0.5}\n')
  (tmp_path / 'notes.txt').write_text('keep me')
  busy = tmp_path / 'busy'
  busy.mkdir()
  (busy / 'config.json').write_text(quickstart.get_config().to_json())
  # Held by this (live) test process.
  (busy / 'lock').write_text(json.dumps(
      {'host': socket.gethostname(), 'pid': os.getpid(), 'since': 'now'}))
  (tmp_path / 'syntax.py').write_text(
      'from configs import quickstart\ndef get_config(:\n')
  (tmp_path / 'raises.py').write_text(
      'from configs import quickstart\ndef get_config():\n'
      '  config = quickstart.get_config()\n  config.batch_size = batch\n')
  return {'run': str(run), 'busy': str(busy), 'pid': os.getpid(),
          'fresh': str(tmp_path / 'fresh' / 'run'),
          'file': str(tmp_path / 'notes.txt'),
          'syntax': str(tmp_path / 'syntax.py'),
          'raises': str(tmp_path / 'raises.py')}


@pytest.mark.parametrize('command,fragments,env', [
    (*row, {}) if len(row) == 2 else row for row in BAD_INPUTS.values()],
    ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_it_and_changes_nothing(
    command, fragments, env, inputs, tmp_path):
  before = _snapshot(tmp_path)
  args = [arg.format(**inputs) for arg in command]
  result = subprocess.run(
      [sys.executable, *(args if args[0] == '-m' else ['train.py', *args])],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **env))
  assert result.returncode == 1, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith('jaxcnn.convert: error: ' if args[0] == '-m'
                             else 'FATAL ')
  for fragment in fragments:
    assert fragment.format(**inputs) in lines[0]
  assert result.stdout == ''
  assert _snapshot(tmp_path) == before
  assert not os.path.exists(os.path.dirname(inputs['fresh']))


@pytest.mark.parametrize('recipe,build,smoke', [
    ('resnet50', 'imagenet2012', 'digits --config.image_size=64'),
    ('efficientdet_d0', 'coco/2017', 'digits_detection --config.image_size=128'),
])
def test_missing_dataset_says_how_to_prepare_it(recipe, build, smoke,
                                                tmp_path):
  result = _train(f'--config=configs/{recipe}.py', f'--workdir={tmp_path}',
                  f'--config.data_dir={tmp_path}/none')
  assert result.returncode != 0
  assert f'tfds build {build}' in result.stderr
  assert f'--config.dataset={smoke}' in result.stderr
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
