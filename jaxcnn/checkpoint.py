"""Orbax checkpoints of the train state, and initialising from one.

Layout: WORKDIR/checkpoints/<step>/{state,meta}: `state` is the TrainState
pytree, `meta` a JSON dict (model name, data position, ...).
"""

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

STATE = 'state'
META = 'meta'


class Checkpointer:
  """Async saves keeping the last `keep` steps; restores into shardings."""

  def __init__(self, directory: str, keep: int):
    self.directory = epath.Path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=True, create=True),
        item_names=(STATE, META))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Starts an async save of `state` at `step` (returns before it is done)."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                      force=True)

  def reached_preemption(self, step: int) -> bool:
    """Whether any host got a preemption notice (multi-host sync point)."""
    return self.manager.reached_preemption(step)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores `step` into the shapes, dtypes and shardings of the target."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore()))
    return restored[STATE], restored[META]

  def wait(self) -> None:
    """Blocks until pending saves are durable."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _find_step_dir(path: str) -> epath.Path:
  """Accepts a workdir, a checkpoints dir, or a single step's dir."""
  path = epath.Path(os.path.expanduser(path))
  if (path / STATE).exists():
    return path
  if (path / 'checkpoints').exists():
    path = path / 'checkpoints'
  steps = sorted((int(p.name), p) for p in path.iterdir()
                 if p.name.isdigit() and (p / STATE).exists())
  if not steps:
    raise FileNotFoundError(
        f'No checkpoint found at {path}: expected a workdir, its checkpoints/ '
        'directory or one step directory containing state/.')
  return steps[-1][1]


def load_meta(path: str) -> dict[str, Any]:
  """The JSON meta of a checkpoint (see load_variables for `path`)."""
  step_dir = _find_step_dir(path)
  if not (step_dir / META).exists():
    return {}
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir / META)


def load_variables(path: str) -> tuple[dict, dict]:
  """`{'params', 'batch_stats'}` (host numpy) and the meta of a checkpoint."""
  step_dir = _find_step_dir(path)
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(step_dir / STATE).item_metadata
  device = jax.local_devices()[0]
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                     sharding=jax.sharding.SingleDeviceSharding(
                                         device)), metadata)
  state = checkpointer.restore(step_dir / STATE, target)
  return ({'params': jax.tree.map(np.asarray, state['params']),
           'batch_stats': jax.tree.map(np.asarray,
                                       state.get('batch_stats', {}))},
          load_meta(path))


def merge_pretrained(fresh: dict, pretrained: dict,
                     head: str = 'head') -> dict:
  """`pretrained` values in `fresh`'s tree; the classifier `head` keeps its
  fresh initialisation when its shape differs (another class count).

  Any other missing, unexpected or mis-shaped entry is an error listing all.
  """
  flat_fresh = _flatten(fresh)
  flat_pre = _flatten(pretrained)
  problems, reinitialised, merged = [], [], {}
  for key, value in flat_fresh.items():
    merged[key] = value
    if key not in flat_pre:
      problems.append(f'missing {key}')
    elif np.shape(flat_pre[key]) == np.shape(value):
      merged[key] = np.asarray(flat_pre[key], dtype=np.asarray(value).dtype)
    elif head in key.split('/'):
      reinitialised.append(key)
    else:
      problems.append(f'shape of {key}: checkpoint {np.shape(flat_pre[key])}, '
                      f'model {np.shape(value)}')
  problems += [f'unexpected {key}' for key in flat_pre if key not in flat_fresh]
  if problems:
    raise ValueError('The checkpoint does not fit the model:\n  ' +
                     '\n  '.join(problems))
  if reinitialised:
    logging.info('Re-initialised the classifier (class count differs): %s',
                 ', '.join(reinitialised))
  tree = _unflatten(merged)
  return {collection: tree.get(collection, {}) for collection in fresh}


def _flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(_flatten(value, name + '/'))
    else:
      flat[name] = value
  return flat


def _unflatten(flat: dict[str, Any]) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    *parents, leaf = name.split('/')
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return tree
