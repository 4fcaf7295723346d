"""Comparing a config with the one a workdir saved (runs and sweeps)."""

import json
import os
from typing import Any, Collection, Mapping


def _fill_added(saved: dict[str, Any], current: dict[str, Any],
                dotted: str, value: Any) -> None:
  """Sets `dotted` ('a.b') in `saved` to `value` where `saved` lacks it and
  `current` has it."""
  *parents, leaf = dotted.split('.')
  for key in parents:
    if not (isinstance(saved.get(key), dict) and
            isinstance(current.get(key), dict)):
      return
    saved, current = saved[key], current[key]
  if leaf not in saved and leaf in current:
    saved[leaf] = value


def differences(path: str, current: dict[str, Any],
                ignore: Collection[str] = (),
                added: Mapping[str, Any] | None = None) -> str:
  """'field: saved -> current, ...' for the fields where the JSON file at
  `path` differs from `current`; '' if it does not exist or agrees.

  `added` maps fields added to the configs after some files were saved
  ('a.b' for nested ones) to the value that reproduces those files' runs:
  a saved file lacking one counts as holding that value.
  """
  if not os.path.exists(path):
    return ''
  with open(path) as f:
    saved = json.load(f)
  for dotted, value in (added or {}).items():
    _fill_added(saved, current, dotted, value)
  return ', '.join(f'{k}: {saved.get(k)!r} -> {current.get(k)!r}'
                   for k in sorted(set(saved) | set(current))
                   if k not in ignore and saved.get(k) != current.get(k))


def write(path: str, config: dict[str, Any]) -> None:
  """Writes `config` as JSON to `path` in one step (a reader sees the old
  file or the new one, never a partial one)."""
  with open(f'{path}.tmp', 'w') as f:
    json.dump(config, f, indent=2, sort_keys=True)
  os.replace(f'{path}.tmp', path)
