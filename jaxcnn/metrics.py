"""Where metrics go: WORKDIR/metrics.jsonl, TensorBoard and the log.

Only process 0 writes. metrics.jsonl holds one JSON object per logged step,
`{"step": N, "train/loss": ..., "eval/accuracy": ...}`; wall-clock figures
(images/s) go to TensorBoard and the log only, so the file of a rerun with
the same seed is identical.
"""

import json
import logging
import os
from typing import Mapping

from jaxcnn.imports import tensorboardX

METRICS_FILE = 'metrics.jsonl'


def read_metrics(workdir: str) -> list[dict]:
  """The records of WORKDIR/metrics.jsonl, oldest first.

  A torn last line (the process died while writing it) is left out: it is
  newer than any checkpoint, so a resumed run writes it again. A damaged
  line before it raises a ValueError naming the file and line.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    lines = [line for line in f.read().split(b'\n') if line.strip()]
  records = []
  for number, line in enumerate(lines, 1):
    try:
      records.append(json.loads(line))
    except ValueError as e:
      if number == len(lines):
        logging.warning('%s: its last line is incomplete (the run stopped '
                        'while writing it); it is left out.', path)
        break
      raise ValueError(f'{path}: line {number} is not a JSON record ({e}); '
                       'repair or remove that line to go on.') from None
  return records


class MetricWriter:
  """Appends metrics to metrics.jsonl and TensorBoard event files."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._path = os.path.join(workdir, METRICS_FILE)
    self._summary = None
    if enabled:
      self._summary = tensorboardX.SummaryWriter(
          os.path.join(workdir, 'tensorboard'))

  def truncate_after(self, step: int) -> None:
    """Drops records newer than `step` (left by a run that died after it)."""
    if not self.enabled or not os.path.exists(self._path):
      return
    kept = [r for r in read_metrics(os.path.dirname(self._path))
            if r['step'] <= step]
    with open(self._path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)

  def write(self, step: int, metrics: Mapping[str, float],
            wall_clock: Mapping[str, float] | None = None) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in metrics.items()}}
    with open(self._path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in {**metrics, **(wall_clock or {})}.items():
      self._summary.add_scalar(name, float(value), global_step=int(step))
    self._summary.flush()

  def close(self) -> None:
    if self._summary is not None:
      self._summary.close()


def format_line(step: int, total: int, metrics: Mapping[str, float]) -> str:
  parts = [f'step {step}/{total}']
  for name, value in metrics.items():
    parts.append(f'{name} {value:.4g}')
  return ' | '.join(parts)


def log(step: int, total: int, metrics: Mapping[str, float]) -> None:
  logging.info(format_line(step, total, metrics))
