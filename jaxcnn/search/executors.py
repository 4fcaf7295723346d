"""Where children train: a local pool of worker processes, or a Ray cluster.

Both take `children.Task`s and return `concurrent.futures.Future`s of
`children.train`'s result. Each child trains in a JAX process of its own
(a worker runs one child at a time and is reused for the next); the local
pool divides this machine's cores among its workers, so that K children at
a time do not each start a thread per core.
"""

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Protocol

from jaxcnn.search import children


class Executor(Protocol):
  def submit(self, task: children.Task) -> concurrent.futures.Future: ...

  def shutdown(self, stop_children: bool) -> None:
    """With `stop_children`, children in flight are stopped (the search
    stopped; they resume when it is rerun)."""


def worker_environment(threads: int, xla_flags: str) -> dict[str, str]:
  """Environment variables for a child's JAX + tf.data process: `threads`
  cores (XLA's Eigen pool off for one thread; TensorFlow's pools sized),
  and `xla_flags` after the user's XLA_FLAGS."""
  env = {'TF_NUM_INTRAOP_THREADS': str(threads),
         'TF_NUM_INTEROP_THREADS': str(threads),
         'OMP_NUM_THREADS': str(threads),
         'TF_CPP_MIN_LOG_LEVEL': '1'}
  flags = [os.environ.get('XLA_FLAGS', ''), xla_flags]
  if threads == 1:
    flags.append('--xla_cpu_multi_thread_eigen=false')
  env['XLA_FLAGS'] = ' '.join(f for f in flags if f)
  return env


def _init_worker(env: dict[str, str]) -> None:
  os.environ.update(env)  # Before the worker first imports JAX.
  if sys.platform == 'linux':  # Dies with the search, even on SIGKILL.
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalExecutor:
  """`parallel` spawned worker processes on this machine."""

  def __init__(self, parallel: int, xla_flags: str = ''):
    threads = max(1, (os.cpu_count() or 1) // parallel)
    self._pool = concurrent.futures.ProcessPoolExecutor(
        parallel, mp_context=multiprocessing.get_context('spawn'),
        initializer=_init_worker,
        initargs=(worker_environment(threads, xla_flags),))

  def submit(self, task: children.Task) -> concurrent.futures.Future:
    return self._pool.submit(children.train, task)

  def shutdown(self, stop_children: bool) -> None:
    if stop_children:
      # SIGTERM: a child's training loop saves a checkpoint and stops.
      for process in list(self._pool._processes.values()):  # No public API.
        process.terminate()
    self._pool.shutdown(wait=not stop_children, cancel_futures=True)


def ray_runtime_env() -> dict:
  """Ray's job-level runtime env: the jaxcnn package travels to every node
  (its dependencies, requirements.txt, must be installed there)."""
  return {'py_modules': [os.path.dirname(os.path.dirname(
      os.path.abspath(children.__file__)))]}


class RayExecutor:
  """One Ray task per child, `cpus_per_child` CPUs each, on the cluster at
  `address` (None: a local Ray instance), joined with `ray_runtime_env`;
  when Ray is already initialised, its runtime env must make jaxcnn
  importable."""

  def __init__(self, address: str | None, cpus_per_child: int = 1,
               xla_flags: str = ''):
    import ray  # Optional: only Ray searches need it.
    if not ray.is_initialized():
      ray.init(address=address, runtime_env=ray_runtime_env(),
               log_to_driver=False)
    self._ray = ray
    self._refs = []
    self._train = ray.remote(num_cpus=cpus_per_child, max_retries=0)(
        children.train).options(runtime_env={
            'env_vars': worker_environment(cpus_per_child, xla_flags)})

  def submit(self, task: children.Task) -> concurrent.futures.Future:
    ref = self._train.remote(task)
    self._refs.append(ref)
    return ref.future()

  def shutdown(self, stop_children: bool) -> None:
    if stop_children:
      for ref in self._refs:
        self._ray.cancel(ref, force=True)
