"""Output shared by the benchmark scripts."""

import json
from typing import Any


def emit(report: dict[str, Any], json_out: str) -> None:
  """Prints `report` as JSON, and writes it to `json_out` if given."""
  print(json.dumps(report, indent=2))
  if json_out:
    with open(json_out, 'w') as f:
      json.dump(report, f, indent=2)
