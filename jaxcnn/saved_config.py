"""Comparing a config with the one a workdir saved (runs and sweeps)."""

import json
import os
from typing import Any, Collection


def differences(path: str, current: dict[str, Any],
                ignore: Collection[str] = ()) -> str:
  """'field: saved -> current, ...' for the fields where the JSON file at
  `path` differs from `current`; '' if it does not exist or agrees."""
  if not os.path.exists(path):
    return ''
  with open(path) as f:
    saved = json.load(f)
  return ', '.join(f'{k}: {saved.get(k)!r} -> {current.get(k)!r}'
                   for k in sorted(set(saved) | set(current))
                   if k not in ignore and saved.get(k) != current.get(k))
