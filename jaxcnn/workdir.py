"""A run's workdir: writable, used by one run at a time, holding one config.

`claim` takes the workdir for a run. A second run on the same workdir is
refused at once, naming the process that holds it. The lock is a file,
`WORKDIR/lock`, created atomically (O_EXCL) and refreshed by its holder every
`HEARTBEAT_SECONDS`; a lock whose process is gone (same host) or whose
refresh is older than `STALE_SECONDS` (a host that died, on a shared
filesystem) is taken over. Until the run says it started (its first step can
run), a failure removes what the claim created, so a corrected command finds
the workdir as it was.
"""

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any, Collection, Iterator, Mapping

from jaxcnn import config_check
from jaxcnn import saved_config

CONFIG_FILE = 'config.json'
LOCK_FILE = 'lock'
# Fields that do not change what a run computes: a resumed run may differ.
# (`on_nonfinite` changes nothing until a step diverges: resuming a halted run
# with 'skip' is the way on.)
# `lowering` changes how the layers run, not what they compute (a resumed
# run may take another platform's).
COSMETIC_FIELDS = frozenset({'progress_bar', 'log_every_steps', 'data_dir',
                             'deterministic', 'on_nonfinite', 'lowering'})
# Config fields added after runs were saved, with the value that reproduces
# those runs: their workdirs resume instead of being refused.
ADDED_FIELDS = {'data_shards': -1, 'task': 'classification',
                'aux_loss_weight': 0.4, 'cutout_size': 0,
                'grad_accum_steps': 1, 'mixup_alpha': 0.0,
                'cutmix_alpha': 0.0, 'mixup_prob': 1.0,
                'mixup_switch_prob': 0.5, 'val_fraction': 0.1}
HEARTBEAT_SECONDS = 30.0
# Several missed heartbeats, and room for clock skew between hosts.
STALE_SECONDS = 300.0


class WorkdirError(ValueError):
  """The workdir cannot be used: not writable, or in use by another run."""


class ConfigMismatchError(ValueError):
  """The workdir holds a run with another config."""


def _is_url(path: str) -> bool:
  return '://' in path


def check_writable(workdir: str) -> None:
  """Says why `workdir` cannot be created or written, changing nothing."""
  problem = config_check.output_dir_problem(workdir)
  if problem:
    raise WorkdirError(f'Cannot write to --workdir={workdir} ({problem}); '
                       'choose a writable directory.')


def check(workdir: str, current: dict[str, Any], lock: bool = True) -> None:
  """Says why a run of the config `current` (as JSON) cannot use `workdir`:
  not writable, holding another run's config, or (with `lock`, as the
  process that will take it) in use by a live run. Reads only; `claim`
  takes the workdir."""
  check_writable(workdir)
  check_config(workdir, current)
  path = os.path.join(workdir, LOCK_FILE)
  if lock and not _is_url(workdir) and os.path.exists(path):
    holder = _holder(path)
    if not _is_stale(path, holder):
      raise _in_use(workdir, holder)


def check_config(workdir: str, current: dict[str, Any],
                 cosmetic: Collection[str] = COSMETIC_FIELDS,
                 added: Mapping[str, Any] | None = None) -> None:
  """Refuses a workdir whose config.json records a run with another config
  (fields in `cosmetic` may differ; `added` defaults to ADDED_FIELDS)."""
  path = os.path.join(workdir, CONFIG_FILE)
  added = ADDED_FIELDS if added is None else added
  try:
    current = _with_saved_lowering_fields(path, current)
    changes = saved_config.differences(path, current, cosmetic, added)
  except (ValueError, UnicodeDecodeError) as e:
    raise ConfigMismatchError(
        f'{path} is damaged ({e}). It records the config of the run in '
        f'{workdir}: restore it, or move it away to resume that run with '
        'this command\'s config, or pass a new --workdir.') from None
  if changes:
    raise ConfigMismatchError(
        f'{workdir} holds a run with a different config ({changes}). '
        'Resume it with the same config, or pass a new --workdir to start '
        'a fresh run.')


def _with_saved_lowering_fields(path: str,
                                current: dict[str, Any]) -> dict[str, Any]:
  """`current` with the model_kwargs that the config.json at `path` has
  and that became `lowering` choices since (lowering.LEGACY_MODEL_FIELDS):
  like `lowering`, they are not compared."""
  from jaxcnn.models import lowering  # JAX: imported only for a saved run.
  if not os.path.exists(path) or not isinstance(
      current.get('model_kwargs'), dict):
    return current
  with open(path) as f:
    saved = json.load(f)
  saved = saved.get('model_kwargs') if isinstance(saved, dict) else None
  _, legacy = lowering.split_model_kwargs(
      saved if isinstance(saved, dict) else {})
  return {**current, 'model_kwargs': {**legacy, **current['model_kwargs']}}


def write_config(workdir: str, current: dict[str, Any]) -> None:
  saved_config.write(os.path.join(workdir, CONFIG_FILE), current)


def _holder(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}  # Being written, or torn by a crash: judged by its age alone.


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Another user's process.
  return True


def _is_stale(path: str, holder: dict[str, Any]) -> bool:
  try:
    age = time.time() - os.stat(path).st_mtime
  except FileNotFoundError:
    return True
  if age > STALE_SECONDS:
    return True
  return (holder.get('host') == socket.gethostname() and
          isinstance(holder.get('pid'), int) and
          not _process_exists(holder['pid']))


def _in_use(workdir: str, holder: dict[str, Any]) -> WorkdirError:
  return WorkdirError(
      f'{workdir} is in use by another run (pid {holder.get("pid", "?")} on '
      f'{holder.get("host", "?")}, since {holder.get("since", "?")}); wait '
      'for it to end, or pass another --workdir.')


class _Lock:
  """WORKDIR/lock, held by this process while it refreshes it."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._stop = threading.Event()
    self._heartbeat = None

  def acquire(self) -> None:
    me = {'host': socket.gethostname(), 'pid': os.getpid(),
          'since': time.strftime('%Y-%m-%d %H:%M:%S')}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        holder = _holder(self.path)
        if not _is_stale(self.path, holder):
          raise _in_use(os.path.dirname(self.path), holder) from None
        # Renaming is atomic: of two processes taking over, one succeeds.
        with contextlib.suppress(FileNotFoundError):
          os.rename(self.path, f'{self.path}.stale.{os.getpid()}')
          os.remove(f'{self.path}.stale.{os.getpid()}')
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self._heartbeat = threading.Thread(target=self._refresh, daemon=True)
      self._heartbeat.start()
      return
    raise WorkdirError(f'Could not take {self.path}: other processes keep '
                       'taking it; pass another --workdir.')

  def _refresh(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      with contextlib.suppress(OSError):
        os.utime(self.path)

  def release(self) -> None:
    self._stop.set()
    if self._heartbeat is not None:
      self._heartbeat.join()
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)


class Claim:
  """What `claim` yields: call `started()` once the first step can run."""

  def __init__(self):
    self.is_started = False

  def started(self) -> None:
    self.is_started = True


@contextlib.contextmanager
def claim(workdir: str, enabled: bool = True) -> Iterator[Claim]:
  """Holds the lock of `workdir` (created if needed) for the run inside.

  If the run fails before `started()`, the directories the run created and
  left empty (the workdir itself, its checkpoints/) are removed again.
  `enabled=False` (processes other than 0 of a multi-process run, which
  share process 0's workdir) takes no lock, nor does a `gs://` workdir
  (Cloud Storage has no atomic create through the file API).
  """
  created = [p for p in (workdir, os.path.join(workdir, 'checkpoints'))
             if not os.path.exists(p)]
  run = Claim()
  if not enabled or _is_url(workdir):
    yield run
    return
  os.makedirs(workdir, exist_ok=True)
  lock = _Lock(workdir)
  try:
    lock.acquire()
  except BaseException:
    _remove_empty(created)
    raise
  try:
    yield run
  finally:
    lock.release()
    if not run.is_started:
      _remove_empty(created)


def _remove_empty(directories: list[str]) -> None:
  for path in reversed(directories):
    with contextlib.suppress(OSError):
      os.rmdir(path)  # Only if empty.
