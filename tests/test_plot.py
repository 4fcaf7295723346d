"""jaxcnn.plot: the plotted lines are the metrics of every run, and the CLI
writes the PNG."""

import json
import os
import subprocess
import sys

from PIL import Image
import pytest

from jaxcnn import metrics
from jaxcnn import plot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(directory, records):
  os.makedirs(directory)
  with open(os.path.join(directory, metrics.METRICS_FILE), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  return str(directory)


# As the trainer logs them: train records every few steps, eval records
# (with EMA in the second run) at some of the same steps.
RUNS = {
    'lr=0.1': [
        {'step': 5, 'train/loss': 2.0, 'train/accuracy': 0.3,
         'train/learning_rate': 0.05},
        {'step': 10, 'train/loss': 1.0, 'train/accuracy': 0.6,
         'train/learning_rate': 0.1},
        {'step': 10, 'eval/loss': 1.2, 'eval/accuracy': 0.55, 'eval/top5': 0.9},
        {'step': 15, 'train/loss': 0.5, 'train/accuracy': 0.8,
         'train/learning_rate': 0.02},
        {'step': 20, 'eval/loss': 0.7, 'eval/accuracy': 0.75, 'eval/top5': 1.0},
    ],
    'lr=0.05': [
        {'step': 10, 'train/loss': 1.5, 'train/accuracy': 0.5,
         'train/learning_rate': 0.05},
        {'step': 10, 'eval/loss': 1.4, 'eval/accuracy': 0.52,
         'eval_ema/loss': 2.1, 'eval_ema/accuracy': 0.3},
        {'step': 20, 'train/loss': 0.9, 'train/accuracy': 0.7,
         'train/learning_rate': 0.0},
        {'step': 20, 'eval/loss': 0.8, 'eval/accuracy': 0.7,
         'eval_ema/loss': 1.1, 'eval_ema/accuracy': 0.6},
    ],
}


def _lines(fig):
  """{panel title: {label: (x, y)}} of a figure's lines."""
  return {ax.get_title(): {line.get_label(): (list(line.get_xdata()),
                                              list(line.get_ydata()))
                           for line in ax.lines} for ax in fig.axes}


def test_every_curve_of_every_run_is_its_metrics(tmp_path):
  workdirs = [_run(tmp_path / name, records) for name, records in RUNS.items()]
  output = tmp_path / 'curves.png'
  fig = plot.write(plot.read_runs(workdirs), str(output))
  assert _lines(fig) == {
      'loss': {
          'lr=0.1 train/loss': ([5, 10, 15], [2.0, 1.0, 0.5]),
          'lr=0.1 eval/loss': ([10, 20], [1.2, 0.7]),
          'lr=0.05 train/loss': ([10, 20], [1.5, 0.9]),
          'lr=0.05 eval/loss': ([10, 20], [1.4, 0.8]),
          'lr=0.05 eval_ema/loss': ([10, 20], [2.1, 1.1])},
      'accuracy': {
          'lr=0.1 train/accuracy': ([5, 10, 15], [0.3, 0.6, 0.8]),
          'lr=0.1 eval/accuracy': ([10, 20], [0.55, 0.75]),
          'lr=0.05 train/accuracy': ([10, 20], [0.5, 0.7]),
          'lr=0.05 eval/accuracy': ([10, 20], [0.52, 0.7]),
          'lr=0.05 eval_ema/accuracy': ([10, 20], [0.3, 0.6])},
      'learning rate': {
          'lr=0.1 train/learning_rate': ([5, 10, 15], [0.05, 0.1, 0.02]),
          'lr=0.05 train/learning_rate': ([10, 20], [0.05, 0.0])}}
  loss = fig.axes[0]
  colours = {line.get_label(): line.get_color() for line in loss.lines}
  assert colours['lr=0.1 train/loss'] == colours['lr=0.1 eval/loss']
  assert colours['lr=0.1 train/loss'] != colours['lr=0.05 train/loss']
  assert {line.get_label(): line.get_linestyle() for line in loss.lines
          if line.get_label().startswith('lr=0.05')} == {
              'lr=0.05 train/loss': '-', 'lr=0.05 eval/loss': '--',
              'lr=0.05 eval_ema/loss': ':'}
  with Image.open(output) as image:
    assert image.format == 'PNG' and image.size == (1500, 450)


def test_labels_are_basenames_unless_they_repeat():
  assert plot.labels_of(['/a/run1', '/b/run2/']) == ['run1', 'run2']
  assert plot.labels_of(['/a/run', '/b/run']) == ['/a/run', '/b/run']


def test_workdirs_without_metrics_are_refused_naming_them(tmp_path):
  workdir = _run(tmp_path / 'run', RUNS['lr=0.1'])
  with pytest.raises(ValueError, match=(
      f'^No metrics.jsonl records in {tmp_path}/empty, {tmp_path}/none.$')):
    plot.read_runs([workdir, str(tmp_path / 'empty'), str(tmp_path / 'none')])


def test_cli_writes_the_png(tmp_path):
  workdir = _run(tmp_path / 'run', RUNS['lr=0.1'])
  output = tmp_path / 'out.png'
  result = subprocess.run(
      [sys.executable, '-m', 'jaxcnn.plot', f'--output={output}', workdir],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout == f'Wrote {output}.\n'
  with Image.open(output) as image:
    assert image.format == 'PNG'
