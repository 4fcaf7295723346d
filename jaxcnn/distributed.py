"""Multi-process start-up through jax.distributed."""

import logging
import os
import sys
import threading

import jax

# JAX's own deadline is set this much later than ours: when it passes, XLA
# aborts the process with a C++ fatal error that Python cannot catch.
_JAX_DEADLINE_MARGIN_S = 30


def _exit_not_joined(what: str, timeout_s: int, hint: str) -> None:
  sys.stderr.write(f'FATAL {what}: the other processes did not join within '
                   f'{timeout_s} s. {hint}\n')
  sys.stderr.flush()
  os._exit(1)  # The main thread is blocked inside JAX: sys.exit cannot end it.


def _initialize_or_exit(timeout_s: int, what: str, hint: str,
                        **kwargs) -> None:
  """jax.distributed.initialize, exiting with one line after `timeout_s`."""
  watchdog = threading.Timer(timeout_s, _exit_not_joined,
                             (what, timeout_s, hint))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
        initialization_timeout=timeout_s + _JAX_DEADLINE_MARGIN_S, **kwargs)
  finally:
    watchdog.cancel()


def initialize(coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1, timeout_s: int = 300,
               auto: bool = False) -> None:
  """Joins the run's processes before any JAX computation.

  Explicit arguments (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID) describe the cluster; `auto` lets JAX detect it (TPU VM pod
  slices, SLURM, ...). With neither, this is a single-process run. When not
  every process has joined after `timeout_s`, the process exits with code 1
  and a one-line message saying what to check.
  """
  coordinator_address = (coordinator_address or
                         os.environ.get('JAX_COORDINATOR_ADDRESS', ''))
  num_processes = num_processes or int(os.environ.get('JAX_NUM_PROCESSES', 0))
  if process_id < 0:
    process_id = int(os.environ.get('JAX_PROCESS_ID', -1))
  if coordinator_address:
    if num_processes <= 0 or process_id < 0:
      raise ValueError('A coordinator address needs --num_processes and '
                       '--process_id (or JAX_NUM_PROCESSES / JAX_PROCESS_ID).')
    _initialize_or_exit(
        timeout_s, f'Process {process_id} of {num_processes}',
        f'Check that all {num_processes} processes were started with '
        f'--num_processes={num_processes}, distinct --process_id values and '
        f'--coordinator_address={coordinator_address}, an address of process '
        '0 that every process can reach.',
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id)
  elif auto:
    _initialize_or_exit(
        timeout_s, 'Cluster start-up',
        'Check that the command was started on every host of the slice or '
        'job.')
  else:
    return
  logging.info('Process %d of %d, %d local devices of %d.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
