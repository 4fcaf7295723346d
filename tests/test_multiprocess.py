"""train.py as 2 processes on localhost (one CPU device each, gloo): the
parameters of a 1-process run, one writer of logs and metrics, checkpoints
that both save and resume, and a one-line error when a peer never joins."""

import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import quickstart
from jaxcnn import checkpoint
from jaxcnn import metrics
from jaxcnn import trainer
from jaxcnn.data import classification

pytestmark = pytest.mark.cost_seconds(140)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# data_shards=2 reads the data as 2 shards in the 1-process run too, so that
# both runs see the same global batches (the default is one per process).
RUN = dict(num_steps=20, checkpoint_every_steps=10, log_every_steps=5,
           eval_every_steps=10, data_shards=2, progress_bar=False)
JOIN_TIMEOUT_S = 5


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _command(workdir, data_dir, port: int, process_id: int,
             timeout_s: int = 60) -> list[str]:
  return [sys.executable, 'train.py', '--config=configs/quickstart.py',
          f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          *(f'--config.{k}={v}' for k, v in RUN.items()),
          f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
          f'--process_id={process_id}', f'--distributed_timeout={timeout_s}']


def _run_processes(commands: list[list[str]], log_dir,
                   timeout_s: float = 300) -> tuple[list[int], list[str]]:
  """Runs the commands at once; their exit codes and outputs."""
  # One CPU device per process: the global mesh has one device per process.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  os.makedirs(log_dir, exist_ok=True)
  logs = [os.path.join(log_dir, f'process_{i}.log')
          for i in range(len(commands))]
  processes = []
  try:
    for command, log in zip(commands, logs):
      with open(log, 'w') as f:
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env,
                                          stdout=f, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_s
    codes = [p.wait(timeout=max(1.0, deadline - time.monotonic()))
             for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  outputs = []
  for log in logs:
    with open(log) as f:
      outputs.append(f.read())
  return codes, outputs


def _train_two_processes(workdir, data_dir, log_dir) -> list[str]:
  port = _free_port()
  codes, outputs = _run_processes(
      [_command(workdir, data_dir, port, i) for i in range(2)], log_dir)
  assert codes == [0, 0], '\n'.join(o[-3000:] for o in outputs)
  return outputs


def _max_difference(a: dict, b: dict) -> float:
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(x - y))), a, b)))


def _finished_steps(workdir) -> list[int]:
  return sorted(int(name) for name in
                os.listdir(os.path.join(workdir, 'checkpoints'))
                if name.isdigit())


@pytest.fixture(scope='module')
def one_process(data_dir, tmp_path_factory) -> str:
  """The reference: the same config, 1 process with 1 device."""
  workdir = str(tmp_path_factory.mktemp('one_process'))
  config = quickstart.get_config()
  config.update(dict(data_dir=data_dir, **RUN))
  trainer.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def two_processes(data_dir, tmp_path_factory) -> tuple[str, list[str]]:
  """A 2-process run in one shared workdir, and each process's output."""
  root = tmp_path_factory.mktemp('two_processes')
  workdir = str(root / 'workdir')
  return workdir, _train_two_processes(workdir, data_dir, root / 'logs')


def test_two_processes_end_with_the_parameters_of_one(one_process,
                                                      two_processes):
  expected, _ = checkpoint.load_variables(one_process)
  variables, meta = checkpoint.load_variables(two_processes[0])
  assert meta['step'] == 20
  # Measured: 1.5e-8, as the 1-device run sums gradients and BatchNorm
  # statistics in another order (a 1-process, 2-device run gives 0.0).
  assert _max_difference(variables, expected) < 1e-5


def test_only_process_0_writes_logs_and_metrics(one_process, two_processes):
  workdir, (log_0, log_1) = two_processes
  expected = metrics.read_metrics(one_process)
  records = metrics.read_metrics(workdir)
  # Train at 5, 10, 15, 20 and eval at 10, 20: one record each, not two.
  assert ([r['step'] for r in records] == [r['step'] for r in expected] ==
          [5, 10, 10, 15, 20, 20])
  for record, reference in zip(records, expected):
    assert record == pytest.approx(reference, rel=1e-5)
  assert 'step 20/20 | eval/accuracy' in log_0
  assert 'step 20/20' not in log_1 and '| train/loss' not in log_1
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert os.path.exists(os.path.join(workdir, 'config.json'))


def test_two_processes_save_checkpoints_and_resume_from_them(
    one_process, two_processes, data_dir, tmp_path):
  finished, _ = two_processes
  assert _finished_steps(finished) == [10, 20]
  # As if both processes had been killed after saving step 10.
  workdir = tmp_path / 'workdir'
  shutil.copytree(finished, workdir)
  shutil.rmtree(workdir / 'checkpoints' / '20')
  log_0, _ = _train_two_processes(workdir, data_dir, tmp_path / 'logs')
  assert 'Resuming from the checkpoint at step 10.' in log_0
  assert _finished_steps(workdir) == [10, 20]
  expected, _ = checkpoint.load_variables(one_process)
  variables, _ = checkpoint.load_variables(str(workdir))
  assert _max_difference(variables, expected) < 1e-5
  assert metrics.read_metrics(workdir) == metrics.read_metrics(finished)


def test_missing_peer_fails_within_the_timeout_saying_what_to_check(
    data_dir, tmp_path):
  port = _free_port()
  start = time.monotonic()
  codes, (output,) = _run_processes(
      [_command(tmp_path / 'workdir', data_dir, port, 0, JOIN_TIMEOUT_S)],
      tmp_path / 'logs', timeout_s=120)
  elapsed = time.monotonic() - start
  assert codes == [1]
  assert (f'FATAL Process 0 of 2: the other processes did not join within '
          f'{JOIN_TIMEOUT_S} s. Check that all 2 processes were started with '
          f'--num_processes=2, distinct --process_id values and '
          f'--coordinator_address=127.0.0.1:{port}') in output
  assert 'Check failure' not in output  # Not JAX's own abort.
  # Start-up (imports) takes 5-20 s on a busy 2-core machine; JAX's own
  # deadline, which aborts with a C++ stack trace, is 30 s later.
  assert elapsed < JOIN_TIMEOUT_S + 45


def test_fixed_data_shards_give_the_same_batches_on_1_or_2_processes(
    digits_config):
  digits_config.data_shards = 2
  one = classification.create(digits_config, 1).train_batches(start_step=21)
  halves = [classification.create(digits_config, 1, process_index=i,
                            process_count=2).train_batches(start_step=21)
            for i in range(2)]
  # Step 23 crosses the end of both shards' first epoch (719 and 718
  # examples, 32 a step).
  for _ in range(3):
    batch = next(one)
    rows = [next(half) for half in halves]
    for key in ('image', 'label'):
      assert batch[key].shape[0] == 64
      np.testing.assert_array_equal(
          batch[key], np.concatenate([r[key] for r in rows]))


def test_data_shards_must_divide_among_the_processes(digits_config):
  digits_config.data_shards = 3
  with pytest.raises(ValueError, match=r'--config.data_shards \(3\) must be '
                     r'divisible by the number of processes \(2\)'):
    classification.create(digits_config, 1, process_index=0, process_count=2)
