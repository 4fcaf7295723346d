"""A run killed after a checkpoint, while it wrote a later metrics line,
must resume to exactly the uninterrupted run."""

import os
import shutil

import jax
import numpy as np

from jaxcnn import checkpoint
from jaxcnn import metrics
from jaxcnn import trainer


def assert_resumes_bitwise(config, straight: str, resumed: str,
                           final: dict, later_checkpoint: int,
                           kept_lines: int) -> None:
  """Copies the finished run `straight` to `resumed` without its checkpoint
  at step `later_checkpoint` and with `metrics.jsonl` cut to `kept_lines`
  lines plus a torn next one, resumes it and compares: the final record,
  every parameter and the metrics file are those of `straight`."""
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', str(later_checkpoint)))
  path = os.path.join(resumed, metrics.METRICS_FILE)
  with open(path) as f:
    lines = f.readlines()
  with open(path, 'w') as f:
    f.writelines(lines[:kept_lines] + [lines[kept_lines][:7]])
  assert trainer.train_and_evaluate(config, resumed) == final
  for a, b in zip(jax.tree.leaves(checkpoint.load_variables(straight)[0]),
                  jax.tree.leaves(checkpoint.load_variables(resumed)[0]),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  with open(os.path.join(straight, metrics.METRICS_FILE)) as f, open(
      path) as g:
    assert f.read() == g.read()
