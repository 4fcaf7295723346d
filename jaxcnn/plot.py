"""Training curves of one or more runs from their metrics.jsonl.

python -m jaxcnn.plot WORKDIR [WORKDIR ...] --output=FILE.png

Three panels against step: loss, accuracy (both train and eval, eval_ema
when the run has EMA) and the learning rate; every run in its own colour,
train solid, eval dashed, eval_ema dotted.
"""

import os
from typing import Mapping, Sequence

from absl import app
from absl import flags
import matplotlib
from matplotlib import figure as figure_lib

from jaxcnn import metrics as metrics_lib

PANELS = (('loss', 'loss'), ('accuracy', 'accuracy'),
          ('learning_rate', 'learning rate'))
PREFIXES = (('train', '-'), ('eval', '--'), ('eval_ema', ':'))


def curve(records: Sequence[Mapping[str, float]],
          key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of the records holding `key`, in file order."""
  points = [(r['step'], r[key]) for r in records if key in r]
  return [s for s, _ in points], [v for _, v in points]


def labels_of(workdirs: Sequence[str]) -> list[str]:
  """Each workdir's basename, or its whole path where basenames repeat."""
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  return [n if names.count(n) == 1 else w for n, w in zip(names, workdirs)]


def figure(runs: Mapping[str, Sequence[Mapping[str, float]]]
           ) -> figure_lib.Figure:
  """The curves of `runs` ({label: metrics.jsonl records}); the lines are
  labelled 'LABEL PREFIX/METRIC', e.g. 'lr=0.1 eval/accuracy'."""
  fig = figure_lib.Figure(figsize=(15, 4.5), layout='constrained')
  axes = fig.subplots(1, len(PANELS))
  cmap = matplotlib.colormaps['tab10' if len(runs) <= 10 else 'tab20']
  for index, (label, records) in enumerate(runs.items()):
    colour = cmap(index % cmap.N)
    for ax, (metric, _) in zip(axes, PANELS):
      for prefix, style in PREFIXES:
        key = f'{prefix}/{metric}'
        steps, values = curve(records, key)
        if steps:
          ax.plot(steps, values, style, color=colour, label=f'{label} {key}',
                  marker='o' if len(steps) == 1 else None)
  for ax, (_, title) in zip(axes, PANELS):
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize='small')
  return fig


def read_runs(workdirs: Sequence[str], labels: Sequence[str] | None = None
              ) -> dict[str, list[dict]]:
  """{label: metrics.jsonl records} of `workdirs` (labels default to
  `labels_of`); raises ValueError naming the workdirs that have none."""
  runs = {label: metrics_lib.read_metrics(w) for label, w in zip(
      labels or labels_of(workdirs), workdirs)}
  empty = [w for w, records in zip(workdirs, runs.values()) if not records]
  if empty:
    raise ValueError(f'No {metrics_lib.METRICS_FILE} records in '
                     f'{", ".join(empty)}.')
  return runs


def write(runs: Mapping[str, Sequence[Mapping[str, float]]],
          output: str) -> figure_lib.Figure:
  """Plots `runs` ({label: records}) to the PNG `output`."""
  fig = figure(runs)
  fig.savefig(output, dpi=100)
  return fig


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError('Pass one or more training workdirs.')
  try:
    write(read_runs(workdirs), FLAGS.output)
  except (ValueError, OSError) as e:
    raise SystemExit(f'FATAL {e}') from None
  print(f'Wrote {FLAGS.output}.')


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (sweep.py imports this
  module)."""
  flags.DEFINE_string('output', None, 'The PNG to write.')
  flags.mark_flags_as_required(['output'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
