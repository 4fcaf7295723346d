"""Device mesh and shardings: data parallel over a 1-D `data` axis.

State shardings come from `PARTITION_RULES` (regex on the parameter path ->
PartitionSpec, first match wins, default replicated), so parameter sharding
(e.g. FSDP) can be added by rules without touching the train step.
"""

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
PARTITION_RULES: tuple[tuple[str, P], ...] = ()


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  # Auto axes: jax.make_mesh defaults to Explicit, which a plain jit step with
  # flax modules does not support.
  return Mesh(np.asarray(devices), (DATA_AXIS,),
              axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def path_name(path: Sequence[Any]) -> str:
  """'layer1_0/conv1/kernel' for a pytree key path."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def state_shardings(mesh: Mesh, abstract_state: Any,
                    rules: Sequence[tuple[str, P]] = PARTITION_RULES) -> Any:
  """NamedShardings for every leaf of `abstract_state`, chosen by `rules`."""
  def sharding(path, _):
    name = path_name(path)
    for pattern, spec in rules:
      if re.search(pattern, name):
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, P())
  return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def global_batch(local_batch: dict[str, np.ndarray],
                 sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into global arrays."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      local_batch)
