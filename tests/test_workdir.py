"""One run per workdir: the lock, writability, the saved config."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from jaxcnn import workdir as workdir_lib


def _write_lock(workdir, age_seconds=0.0, **holder):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, workdir_lib.LOCK_FILE)
  with open(path, 'w') as f:
    json.dump({'since': '2026-01-01 00:00:00', **holder}, f)
  then = time.time() - age_seconds
  os.utime(path, (then, then))
  return path


@pytest.fixture
def live_pid():
  """A process of this host that is alive for the test."""
  proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  yield proc.pid
  proc.kill()
  proc.wait()


def test_a_held_workdir_is_refused_naming_the_holder(tmp_path, live_pid):
  workdir = str(tmp_path / 'run')
  lock = _write_lock(workdir, host=socket.gethostname(), pid=live_pid)
  before = open(lock).read()
  with pytest.raises(workdir_lib.WorkdirError,
                     match=f'in use by another run \\(pid {live_pid} on '):
    with workdir_lib.claim(workdir):
      pass
  assert open(lock).read() == before


def test_a_fresh_lock_of_another_host_is_refused(tmp_path):
  workdir = str(tmp_path / 'run')
  _write_lock(workdir, age_seconds=10, host='elsewhere', pid=1)
  with pytest.raises(workdir_lib.WorkdirError, match='pid 1 on elsewhere'):
    with workdir_lib.claim(workdir):
      pass


@pytest.mark.parametrize('holder,age', [
    ({'host': socket.gethostname(), 'pid': 2**22 + 12345}, 0.0),  # Dead pid.
    ({'host': 'elsewhere', 'pid': 1}, workdir_lib.STALE_SECONDS + 5),
    ({}, workdir_lib.STALE_SECONDS + 5),  # Torn while being written.
], ids=['dead process', 'host stopped refreshing', 'unreadable'])
def test_a_stale_lock_is_taken_over_and_released(tmp_path, holder, age):
  workdir = str(tmp_path / 'run')
  lock = _write_lock(workdir, age_seconds=age, **holder)
  with workdir_lib.claim(workdir) as run:
    mine = json.load(open(lock))
    assert (mine['host'], mine['pid']) == (socket.gethostname(), os.getpid())
    run.started()
  assert not os.path.exists(lock)
  assert os.listdir(workdir) == []


def test_the_holder_refreshes_its_lock(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lib, 'HEARTBEAT_SECONDS', 0.05)
  workdir = str(tmp_path / 'run')
  with workdir_lib.claim(workdir):
    lock = os.path.join(workdir, workdir_lib.LOCK_FILE)
    os.utime(lock, (1.0, 1.0))
    time.sleep(0.5)
    assert time.time() - os.stat(lock).st_mtime < 5


def test_a_failure_before_the_start_removes_what_the_claim_created(tmp_path):
  workdir = str(tmp_path / 'new' / 'run')
  with pytest.raises(RuntimeError):
    with workdir_lib.claim(workdir):
      os.makedirs(os.path.join(workdir, 'checkpoints'))  # As Orbax does.
      raise RuntimeError('the dataset is missing')
  assert not os.path.exists(workdir)
  assert os.path.isdir(tmp_path / 'new')  # Left: it may be the user's.


def test_a_failure_after_the_start_keeps_the_run(tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(RuntimeError):
    with workdir_lib.claim(workdir) as run:
      run.started()
      os.makedirs(os.path.join(workdir, 'checkpoints'))
      raise RuntimeError('diverged')
  assert os.listdir(workdir) == ['checkpoints']


def test_an_existing_workdir_is_left_as_it_was_on_an_early_failure(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(RuntimeError):
    with workdir_lib.claim(str(tmp_path)):
      raise RuntimeError('bad config')
  assert os.listdir(tmp_path) == ['notes.txt']


def test_unwritable_workdirs_are_named_without_creating_anything(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(workdir_lib.WorkdirError,
                     match='file is a file'):
    workdir_lib.check_writable(str(tmp_path / 'file' / 'run'))
  workdir_lib.check_writable(str(tmp_path / 'a' / 'b'))
  assert sorted(os.listdir(tmp_path)) == ['file']


def test_a_damaged_config_names_the_file_and_what_to_do(tmp_path):
  (tmp_path / workdir_lib.CONFIG_FILE).write_text('{"model": "resn')
  with pytest.raises(workdir_lib.ConfigMismatchError) as error:
    workdir_lib.check_config(str(tmp_path), {'model': 'resnet18'}, (), {})
  message = str(error.value)
  assert f'{tmp_path / workdir_lib.CONFIG_FILE} is damaged' in message
  assert 'pass a new --workdir' in message and '\n' not in message


def test_another_config_is_refused_naming_the_fields(tmp_path):
  workdir_lib.write_config(str(tmp_path), {'model': 'resnet18', 'seed': 0})
  workdir_lib.check_config(str(tmp_path), {'model': 'resnet18', 'seed': 1},
                           cosmetic=('seed',), added={})
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match="seed: 0 -> 1"):
    workdir_lib.check_config(str(tmp_path), {'model': 'resnet18', 'seed': 1},
                             cosmetic=(), added={})


def test_a_run_saved_with_lowering_model_fields_resumes_with_any_lowering(
    tmp_path):
  """Runs before config.lowering recorded model_kwargs.pointwise/depthwise;
  those, like `lowering`, change how layers run, not the run."""
  workdir_lib.write_config(str(tmp_path), {
      'model': 'resnet18', 'model_kwargs': {'pointwise': 'conv',
                                            'zero_init_residual': True}})
  current = {'model': 'resnet18', 'model_kwargs': {'zero_init_residual': True},
             'lowering': {'pointwise': 'matmul'}}
  workdir_lib.check_config(str(tmp_path), current)
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match="model_kwargs: {'pointwise': 'conv', "
                     "'zero_init_residual': True} -> {'pointwise': 'conv', "
                     "'zero_init_residual': False}"):
    workdir_lib.check_config(str(tmp_path), {
        **current, 'model_kwargs': {'zero_init_residual': False}})
