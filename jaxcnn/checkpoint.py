"""Orbax checkpoints of the train state, and initialising from one.

Layout: WORKDIR/checkpoints/<step>/{state,meta}: `state` is the TrainState
pytree, `meta` a JSON dict (model name, data position, ...) that also holds a
checksum of every array of `state`, verified on restore.
"""

import contextlib
import logging
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

STATE = 'state'
META = 'meta'
CHECKSUMS = 'checksums'
# What a finished step holds besides the array data (Orbax writes a step under
# a temporary name and renames it when complete, so a step that was being
# written when the process died is never listed).
_REQUIRED_FILES = ('_CHECKPOINT_METADATA', f'{STATE}/_METADATA',
                   f'{META}/metadata')
CORRUPT_SUFFIX = '.corrupt'


class CorruptCheckpointError(ValueError):
  """A checkpoint step whose files are missing or do not match its checksums."""


def _path_name(path: tuple) -> str:
  """'params/conv1/kernel' for a TrainState attribute or a plain dict alike."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(
      k, 'idx', k)))) for k in path)


def _as_uint32(x: jax.Array) -> jax.Array:
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  if x.dtype.itemsize >= 4:  # 8-byte values become pairs of words.
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  unsigned = jnp.uint16 if x.dtype.itemsize == 2 else jnp.uint8
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _host_words(value: np.ndarray) -> np.ndarray:
  """_as_uint32 in numpy."""
  if value.dtype == np.bool_:
    return value.astype(np.uint32)
  value = np.ascontiguousarray(value)
  if value.dtype.itemsize >= 4:
    return value.view(np.uint32)
  unsigned = np.uint16 if value.dtype.itemsize == 2 else np.uint8
  return value.view(unsigned).astype(np.uint32)


def _weighted_sums(words: Any, xp: Any) -> tuple[Any, Any]:
  """Two position-weighted sums mod 2**32 of uint32 `words` (numpy or
  jax.numpy as `xp`): any single flipped bit changes the first (its weights
  are odd). Integer sums do not depend on how the array is sharded."""
  words = words.ravel()
  odd = xp.arange(words.size, dtype=xp.uint32) * xp.uint32(2) + xp.uint32(1)
  return (xp.sum(words * odd * xp.uint32(0x9E3779B1), dtype=xp.uint32),
          xp.sum((words ^ (words >> xp.uint32(15))) *
                 (odd * xp.uint32(0x85EBCA6B)), dtype=xp.uint32))


@jax.jit
def _device_fingerprints(leaves: list[jax.Array]) -> list[jax.Array]:
  return [jnp.stack(_weighted_sums(_as_uint32(leaf), jnp)) for leaf in leaves]


def _host_value(leaf: Any) -> np.ndarray | None:
  """The whole value of a host array or of a CPU array this process holds,
  else None. On CPU, XLA takes 10 s to compile _device_fingerprints for the
  ~800 arrays of a narrow EfficientDet's train state; numpy needs none."""
  if not isinstance(leaf, jax.Array):
    return np.asarray(leaf)
  if any(d.platform != 'cpu' for d in leaf.sharding.device_set):
    return None
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  if leaf.is_fully_addressable:
    return np.asarray(leaf)
  if leaf.sharding.is_fully_replicated:
    return np.asarray(leaf.addressable_data(0))
  return None


def array_checksums(tree: Any) -> dict[str, str]:
  """A checksum per array of `tree`, by path name; the same for an array on
  any device or host, however it is sharded."""
  with_paths = jax.tree_util.tree_flatten_with_path(tree)[0]
  values = [_host_value(leaf) for _, leaf in with_paths]
  device_sums = iter(jax.device_get(_device_fingerprints(
      [leaf for (_, leaf), value in zip(with_paths, values) if value is None])))
  sums = [next(device_sums) if value is None else
          _weighted_sums(_host_words(value), np) for value in values]
  return {_path_name(path): f'{int(a):08x}{int(b):08x}'
          for (path, _), (a, b) in zip(with_paths, sums)}


def verify(tree: Any, expected: dict[str, str], where: str) -> None:
  """Raises CorruptCheckpointError naming the arrays whose data changed."""
  actual = array_checksums(tree)
  wrong = [name for name in actual if name in expected and
           actual[name] != expected[name]]
  missing = [name for name in actual if name not in expected]
  if wrong or missing:
    raise CorruptCheckpointError(
        f'{where}: ' + '; '.join(
            ([f'checksum mismatch in {", ".join(wrong)}'] if wrong else []) +
            ([f'no checksum for {", ".join(missing)}'] if missing else [])))


class Checkpointer:
  """Async saves keeping the last `keep` steps; restores into shardings."""

  def __init__(self, directory: str, keep: int):
    self.directory = epath.Path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=True, create=True),
        item_names=(STATE, META))

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Starts an async save of `state` at `step` (returns before it is done);
    `meta` gets the checksums of the arrays of `state`."""
    meta = {**meta, CHECKSUMS: array_checksums(state)}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                      force=True)

  def reached_preemption(self, step: int) -> bool:
    """Whether any host got a preemption notice (multi-host sync point)."""
    return self.manager.reached_preemption(step)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores `step` into the shapes, dtypes and shardings of the target.

    Raises CorruptCheckpointError if a file is missing, unreadable or holds
    other data than was saved.
    """
    step_dir = self.directory / str(step)
    missing = [f for f in _REQUIRED_FILES if not (step_dir / f).exists()]
    if missing:
      raise CorruptCheckpointError(f'{step_dir}: missing {", ".join(missing)}')
    with _reading(step_dir):
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore()))
    meta = restored[META]
    if not isinstance(meta, dict) or CHECKSUMS not in meta:
      raise CorruptCheckpointError(f'{step_dir}: its meta has no checksums')
    verify(restored[STATE], meta[CHECKSUMS], str(step_dir))
    return restored[STATE], meta

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest intact step, or None if there is none.

    Corrupt steps, newest first, are logged and set aside as
    `<step>.corrupt` (kept for inspection, never deleted).
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return (step, *self.restore(step, abstract_state))
      except CorruptCheckpointError as e:
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: CorruptCheckpointError) -> None:
    step_dir = self.directory / str(step)
    aside = self.directory / f'{step}{CORRUPT_SUFFIX}'
    copies = 1
    while aside.exists():
      aside = self.directory / f'{step}{CORRUPT_SUFFIX}-{copies}'
      copies += 1
    if jax.process_index() == 0:
      step_dir.rename(aside)
    multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    self.manager.reload()
    logging.warning('Checkpoint step %d is corrupt and was moved to %s; '
                    'falling back to an earlier step. %s', step, aside, error)

  def wait(self) -> None:
    """Blocks until pending saves are durable."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc_info) -> None:
    # Also on an error: a started save of an earlier, good step completes.
    self.wait()
    self.close()


def _unreadable_reason(error: BaseException) -> str:
  """Why reading failed, in words. TensorStore chains its errors: the first
  names the array beside a repr of the whole store, the last the cause, as
  'STATUS_CODE: Error reading "params.conv1.kernel/0.0" in ...'."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = (str(error).splitlines() or [type(error).__name__])[0]
  if re.match(r'[A-Z_]+: ', text):
    array = re.search(r'"((?:params|batch_stats|opt_state|ema)[^"/]*)', text)
    return ('a data file is missing, truncated or damaged' +
            (f' (array {array.group(1)})' if array else ''))
  return text if len(text) <= 300 else text[:text.rfind(' ', 0, 300)] + ' ...'


@contextlib.contextmanager
def _reading(step_dir: epath.Path):
  """Turns the errors of reading damaged files into CorruptCheckpointError."""
  try:
    yield
  except CorruptCheckpointError:
    raise
  except Exception as e:  # TensorStore reports them as a bare Exception.
    raise CorruptCheckpointError(
        f'{step_dir}: unreadable, {_unreadable_reason(e)}') from e


def absolute(path: str) -> str:
  """`path` made absolute (Orbax needs it), unless it is a URL (gs://...)."""
  return path if '://' in path else os.path.abspath(os.path.expanduser(path))


def _find_step_dir(path: str) -> epath.Path:
  """Accepts a workdir, a checkpoints dir, or a single step's dir."""
  path = epath.Path(absolute(path))
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
  with _reading(step_dir):
    return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
        step_dir / META)


def recorded_model_kwargs(directory: str) -> dict[str, Any] | None:
  """The `model_kwargs` that the newest readable step under `directory` (a
  run's checkpoints/) recorded; None if there is none (or it predates them)."""
  path = epath.Path(absolute(directory))
  if not path.exists():
    return None
  for step in sorted((int(p.name) for p in path.iterdir() if p.name.isdigit()),
                     reverse=True):
    try:
      meta = load_meta(str(path / str(step)))
    except (CorruptCheckpointError, FileNotFoundError):
      continue  # Restoring sets it aside and falls back.
    return meta.get('model_kwargs')
  return None


def model_kwargs_of(init_from: str) -> dict[str, Any]:
  """The model fields that the weights at `init_from` need (e.g. torchvision
  EfficientNet's symmetric padding); {} when there are none."""
  if not init_from:
    return {}
  try:
    return load_meta(init_from).get('model_kwargs', {})
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f'init_from={init_from}: the weights the run starts from (whose model '
        f'fields it needs) are missing: {e}') from None


def load_variables(path: str, use_ema: bool = False) -> tuple[dict, dict]:
  """`{'params', 'batch_stats'}` (host numpy; with `use_ema`, their moving
  averages) and the meta of a checkpoint, verified against its checksums."""
  step_dir = _find_step_dir(path)
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with _reading(step_dir):
    metadata = checkpointer.metadata(step_dir / STATE).item_metadata
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        metadata)
    state = checkpointer.restore(step_dir / STATE, target)
    meta = load_meta(path)
  if use_ema and not state.get('ema'):
    raise ValueError(f'{path} holds no EMA weights (its run had ema_decay=0); '
                     'drop --use_ema.')
  source = state['ema'] if use_ema else state
  variables = {'params': source['params'],
               'batch_stats': source.get('batch_stats', {})}
  if CHECKSUMS in meta:
    verify({'ema': variables} if use_ema else variables, meta[CHECKSUMS],
           str(step_dir))
  else:
    logging.warning('%s has no checksums: its arrays are not verified.',
                    step_dir)
  return jax.tree.map(np.asarray, variables), meta


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
