"""Multi-process start-up through jax.distributed."""

import logging
import os

import jax


def initialize(coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1, timeout_s: int = 300,
               auto: bool = False) -> None:
  """Joins the run's processes before any JAX computation.

  Explicit arguments (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID) describe the cluster; `auto` lets JAX detect it (TPU VM pod
  slices, SLURM, ...). With neither, this is a single-process run.
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
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=timeout_s)
  elif auto:
    jax.distributed.initialize(initialization_timeout=timeout_s)
  else:
    return
  logging.info('Process %d of %d, %d local devices of %d.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
