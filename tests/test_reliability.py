"""Reliability: reproducible runs, SIGKILL and SIGTERM mid-run, corrupt
checkpoints, divergence."""

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import train
from configs import quickstart
from jaxcnn import checkpoint
from jaxcnn import metrics
from jaxcnn import trainer

pytestmark = pytest.mark.cost_seconds(445)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Long enough (about 10 s) for a signal to land mid-run.
RUN = dict(num_steps=300, checkpoint_every_steps=50, progress_bar=False)
# The learning rate jumps from 0.1 to 1e29 at step 7, whose weights are still
# finite (huge); every later step overflows.
DIVERGING = dict(num_steps=20, checkpoint_every_steps=2, log_every_steps=5,
                 warmup_epochs=0.0, schedule='multistep',
                 lr_boundaries_epochs=(0.25,), lr_decay_rate=1e30,
                 keep_checkpoints=20, progress_bar=False)


def _config(data_dir, **overrides):
  config = quickstart.get_config()
  config.update(dict(data_dir=data_dir, **overrides))
  return config


def _flags(data_dir, workdir, overrides):
  return ['--config=configs/quickstart.py', f'--workdir={workdir}',
          f'--config.data_dir={data_dir}',
          *(f'--config.{k}={v}' for k, v in overrides.items())]


def _start(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen([sys.executable, 'train.py', *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _run(*args):
  proc = _start(*args)
  _, stderr = proc.communicate(timeout=300)
  return proc.returncode, stderr


def _steps(workdir):
  """Finished checkpoints: Orbax renames `<step>.orbax-checkpoint-tmp...`."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _start_and_signal(sig, workdir, args):
  """Starts train.py and sends `sig` once its first checkpoint is on disk."""
  proc = _start(*args)
  deadline = time.monotonic() + 120
  while not _steps(workdir) and time.monotonic() < deadline:
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.05)
  assert proc.poll() is None, 'the run ended before the signal'
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=120)
  return proc.returncode, stderr


def _params(path):
  return jax.tree.leaves(checkpoint.load_variables(path)[0]['params'])


def _assert_same_run(a, b):
  for x, y in zip(_params(a), _params(b), strict=True):
    np.testing.assert_array_equal(x, y)
  with open(os.path.join(a, metrics.METRICS_FILE)) as f, open(
      os.path.join(b, metrics.METRICS_FILE)) as g:
    assert f.read() == g.read()


@pytest.fixture(scope='module')
def uninterrupted(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  trainer.train_and_evaluate(_config(data_dir, **RUN), workdir)
  assert _steps(workdir)[-1] == 300
  return workdir


def test_same_seed_gives_identical_metrics_and_bitwise_parameters(
    digits_config, tmp_path):
  digits_config.num_steps = 15
  runs = [str(tmp_path / 'a'), str(tmp_path / 'b')]
  for workdir in runs:
    trainer.train_and_evaluate(digits_config, workdir)
  _assert_same_run(*runs)
  assert len(metrics.read_metrics(runs[0])) == 4  # Logs at 5, 10, 15; eval.


def test_deterministic_adds_the_gpu_flag_once():
  flag = '--xla_gpu_deterministic_ops=true'
  assert train.with_deterministic_flag('') == flag
  assert (train.with_deterministic_flag('--xla_dump_to=/d') ==
          f'--xla_dump_to=/d {flag}')
  assert train.with_deterministic_flag(flag) == flag


def test_sigkill_then_rerun_ends_bitwise_like_an_uninterrupted_run(
    data_dir, tmp_path, uninterrupted):
  # deterministic=True also checks that XLA accepts the flag on a CPU.
  args = _flags(data_dir, tmp_path, dict(RUN, deterministic=True))
  code, _ = _start_and_signal(signal.SIGKILL, tmp_path, args)
  assert code == -signal.SIGKILL
  assert 0 < _steps(tmp_path)[-1] < 300
  code, stderr = _run(*args)
  assert code == 0, stderr[-3000:]
  assert 'Resuming from the checkpoint at step' in stderr
  _assert_same_run(uninterrupted, str(tmp_path))


@pytest.mark.parametrize('sig,exit_code,says', [
    (signal.SIGTERM, 143, 'Preempted'), (signal.SIGINT, 130, 'Interrupted')],
    ids=['SIGTERM', 'SIGINT'])
def test_sigterm_or_ctrl_c_saves_the_current_step_then_sigterm_reruns_bitwise(
    data_dir, tmp_path, uninterrupted, sig, exit_code, says):
  args = _flags(data_dir, tmp_path, RUN)
  code, stderr = _start_and_signal(sig, tmp_path, args)
  assert code == exit_code, stderr[-3000:]
  assert 'Traceback' not in stderr
  step = _steps(tmp_path)[-1]
  assert f'{says} at step {step}: checkpoint saved, exiting' in stderr
  assert 0 < step < 300
  if sig == signal.SIGINT:
    # Saved by the same code as on SIGTERM, whose rerun is checked below.
    assert checkpoint.load_variables(str(tmp_path))[1]['step'] == step
    return
  code, stderr = _run(*args)
  assert code == 0, stderr[-3000:]
  assert f'Resuming from the checkpoint at step {step}.' in stderr
  _assert_same_run(uninterrupted, str(tmp_path))


def test_sigkill_while_a_checkpoint_is_written_never_resumes_from_it(
    data_dir, tmp_path, uninterrupted):
  args = _flags(data_dir, tmp_path, RUN)
  proc = _start(*args)
  directory = tmp_path / 'checkpoints'
  writing = []
  try:
    # Orbax writes a step as `<step>.orbax-checkpoint-tmp-<id>`, renamed when
    # complete: kill the process the moment one appears.
    while not writing and proc.poll() is None:
      writing = [n for n in (os.listdir(directory) if directory.exists()
                             else []) if 'tmp' in n]
    proc.kill()
  finally:
    proc.communicate(timeout=60)
  assert writing, 'the run ended before a checkpoint was caught being written'
  in_progress = int(writing[0].split('.')[0])
  assert in_progress not in _steps(tmp_path)
  code, stderr = _run(*args)
  assert code == 0, stderr[-3000:]
  assert f'Resuming from the checkpoint at step {in_progress}.' not in stderr
  _assert_same_run(uninterrupted, str(tmp_path))


def _data_files(step_dir):
  return sorted(glob.glob(f'{step_dir}/state/ocdbt.process_0/d/*'),
                key=os.path.getsize)


def _flip_a_byte(step_dir):
  path = _data_files(step_dir)[-1]
  with open(path, 'r+b') as f:
    data = bytearray(f.read())
    data[len(data) // 2] ^= 0x10
    f.seek(0)
    f.write(data)


def _truncate(step_dir):
  path = _data_files(step_dir)[-1]
  os.truncate(path, os.path.getsize(path) // 2)


CORRUPTIONS = {
    'flipped byte': (_flip_a_byte, 'checksum mismatch in'),
    'truncated file': (_truncate, 'unreadable'),
    'missing file': (lambda d: os.remove(_data_files(d)[-1]), 'unreadable'),
    'missing array metadata': (lambda d: os.remove(f'{d}/state/_METADATA'),
                               'missing state/_METADATA'),
    'missing meta': (lambda d: shutil.rmtree(f'{d}/meta'),
                     'missing meta/metadata'),
}


@pytest.mark.parametrize('corruption', CORRUPTIONS)
def test_corrupt_latest_checkpoint_is_set_aside_and_the_run_falls_back(
    corruption, data_dir, tmp_path, uninterrupted, caplog):
  workdir = str(tmp_path / 'run')
  shutil.copytree(uninterrupted, workdir)
  damage, reason = CORRUPTIONS[corruption]
  original = sorted(os.listdir(f'{workdir}/checkpoints/300'))
  damage(f'{workdir}/checkpoints/300')
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(_config(data_dir, **RUN), workdir)
  assert ('Checkpoint step 300 is corrupt and was moved to '
          f'{workdir}/checkpoints/300.corrupt') in caplog.text
  assert reason in caplog.text
  assert 'Resuming from the checkpoint at step 250.' in caplog.text
  # Kept for inspection with what was left of it; a new step 300 was written.
  kept = sorted(os.listdir(f'{workdir}/checkpoints/300.corrupt'))
  assert set(kept) <= set(original) and len(kept) >= len(original) - 1
  assert _steps(workdir)[-1] == 300
  _assert_same_run(uninterrupted, workdir)


def test_divergence_halts_naming_the_step_and_keeps_finite_checkpoints(
    data_dir, tmp_path):
  code, stderr = _run(*_flags(data_dir, tmp_path, DIVERGING))
  assert code == 1
  assert ('FATAL Non-finite loss or gradient at step 8; the checkpoints hold '
          'only earlier, finite steps.') in stderr
  assert 'Traceback' not in stderr
  assert _steps(tmp_path) == [2, 4, 6]
  for step in (2, 4, 6):
    assert all(np.isfinite(p).all()
               for p in _params(f'{tmp_path}/checkpoints/{step}'))


def test_skip_leaves_the_weights_of_nonfinite_steps_unchanged(
    data_dir, tmp_path):
  workdir = str(tmp_path)
  trainer.train_and_evaluate(
      _config(data_dir, on_nonfinite='skip', **DIVERGING), workdir)
  skipped = [r['train/skipped_steps'] for r in metrics.read_metrics(workdir)
             if 'train/loss' in r]
  assert skipped == [0, 3, 5, 5]  # Steps 8 to 20.
  assert _steps(workdir) == list(range(2, 22, 2))
  for step in _steps(workdir):
    assert all(np.isfinite(p).all()
               for p in _params(f'{workdir}/checkpoints/{step}'))
  for x, y in zip(_params(f'{workdir}/checkpoints/8'), _params(workdir),
                  strict=True):
    np.testing.assert_array_equal(x, y)


def _snapshot(directory):
  """Every file under `directory` (relative path -> bytes)."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


def test_a_second_run_on_a_busy_workdir_is_refused_leaving_the_first_be(
    data_dir, tmp_path):
  # Long enough to be running still when the second has started.
  args = _flags(data_dir, tmp_path, dict(RUN, num_steps=100_000))
  first = _start(*args)
  try:
    deadline = time.monotonic() + 120
    while not _steps(tmp_path) and time.monotonic() < deadline:
      assert first.poll() is None, first.communicate()[1][-3000:]
      time.sleep(0.05)
    code, stderr = _run(*args)
    assert first.poll() is None, 'the first run stopped'
    first.send_signal(signal.SIGTERM)
    _, first_stderr = first.communicate(timeout=120)
  finally:
    first.kill()
  assert code == 1
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, stderr
  assert lines[0].startswith(f'FATAL {tmp_path} is in use by another run '
                             f'(pid {first.pid} on ')
  # The first saved its step as usual and released the workdir.
  assert first.returncode == 143, first_stderr[-3000:]
  step = _steps(tmp_path)[-1]
  assert f'Preempted at step {step}: checkpoint saved' in first_stderr
  assert not os.path.exists(tmp_path / 'lock')


def test_rerunning_a_finished_run_changes_nothing(
    data_dir, tmp_path, uninterrupted, caplog):
  workdir = str(tmp_path / 'run')
  shutil.copytree(uninterrupted, workdir)
  before = _snapshot(workdir)
  with caplog.at_level(logging.INFO):
    final = trainer.train_and_evaluate(_config(data_dir, **RUN), workdir)
  assert _snapshot(workdir) == before
  assert (f'The run in {workdir} is complete (step 300 of 300): its final '
          f'evaluation is the last line of {workdir}/metrics.jsonl') in (
              caplog.text)
  last = metrics.read_metrics(workdir)[-1]
  assert final == {k: v for k, v in last.items() if k != 'step'}


def test_a_start_that_fails_before_training_writes_nothing(
    data_dir, tmp_path, digits_config):
  workdir = str(tmp_path / 'run')
  missing = _config(str(tmp_path / 'no_data'), dataset='mnist', num_steps=2)
  with pytest.raises(Exception, match='mnist'):
    trainer.train_and_evaluate(missing, workdir)
  assert not os.path.exists(workdir)
  # The corrected command is a new run, not "another config".
  digits_config.num_steps = 2
  assert 'eval/accuracy' in trainer.train_and_evaluate(digits_config, workdir)


def test_a_torn_last_metrics_line_is_repaired_on_resume(
    data_dir, tmp_path, uninterrupted):
  workdir = str(tmp_path / 'run')
  shutil.copytree(uninterrupted, workdir)
  shutil.rmtree(f'{workdir}/checkpoints/300')  # Died before saving it...
  path = os.path.join(workdir, metrics.METRICS_FILE)
  with open(path) as f:
    lines = f.readlines()
  kept = [line for line in lines if json.loads(line)['step'] <= 250]
  torn = lines[len(kept)][:len(lines[len(kept)]) // 2]
  with open(path, 'w') as f:
    f.writelines(kept + [torn])  # ...and while writing a later line.
  trainer.train_and_evaluate(_config(data_dir, **RUN), workdir)
  _assert_same_run(uninterrupted, workdir)

