"""A search's outputs, rewritten after every child:

  history.jsonl  one child a line, in the order they finished
  best.json      the best genotype string, its record, the command that
                 trains it at full size
  summary.md     best and final-population accuracy, children per hour,
                 the top children
  progress.png   best-so-far accuracy against children trained, for this
                 search and every other search in the same parent directory
                 (evolution and random search side by side)
"""

import json
import os
import statistics
from typing import Any, Sequence

import matplotlib
from matplotlib import figure as figure_lib

HISTORY_FILE = 'history.jsonl'
BEST_FILE = 'best.json'
SUMMARY_FILE = 'summary.md'
PROGRESS_FILE = 'progress.png'
STATE_FILE = 'search.json'
FULL_SIZE_COMMAND = ("python train.py --config=configs/nasnet_cifar10.py "
                     "--workdir=/tmp/best --config.model_kwargs.genotype='{}'")


def si(value: float) -> str:
  """'1.234 M', '56.7 K': four digits in the largest unit that fits."""
  for scale, unit in ((1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
    if value >= scale:
      return f'{value / scale:.4g} {unit}'
  return f'{value:.0f}'


def best_so_far(accuracies: Sequence[float]) -> list[float]:
  best, out = float('-inf'), []
  for accuracy in accuracies:
    best = max(best, accuracy)
    out.append(best)
  return out


def _atomic_write(path: str, text: str | bytes) -> None:
  temporary = f'{path}.tmp'
  with open(temporary, 'wb' if isinstance(text, bytes) else 'w') as f:
    f.write(text)
  os.replace(temporary, path)


def summary(records: Sequence[dict[str, Any]], population: Sequence[int],
            algorithm: str, num_children: int,
            elapsed_seconds: float) -> dict[str, Any]:
  """The numbers summary.md reports."""
  final = [records[i]['accuracy'] for i in population]
  best = max(records, key=lambda r: r['accuracy'])
  return {
      'algorithm': algorithm, 'children': len(records),
      'num_children': num_children, 'best_accuracy': best['accuracy'],
      'best_id': best['id'],
      'population_mean': statistics.fmean(final),
      'population_std': statistics.stdev(final) if len(final) > 1 else 0.0,
      'population_size': len(final),
      'hours': elapsed_seconds / 3600,
      'children_per_hour': len(records) / max(elapsed_seconds, 1e-9) * 3600,
  }


def _summary_markdown(numbers: dict[str, Any],
                      records: Sequence[dict[str, Any]]) -> str:
  best = records[[r['id'] for r in records].index(numbers['best_id'])]
  top = sorted(records, key=lambda r: -r['accuracy'])[:10]
  lines = [
      f'# Architecture search ({numbers["algorithm"]})', '',
      f'{numbers["children"]} of {numbers["num_children"]} children trained '
      f'in {numbers["hours"]:.2f} h ({numbers["children_per_hour"]:.1f} '
      'children per hour).', '',
      '| best accuracy | final population accuracy (mean ± std, '
      f'{numbers["population_size"]} members) |', '|---:|---:|',
      f'| {numbers["best_accuracy"]:.4f} (child {numbers["best_id"]}) | '
      f'{numbers["population_mean"]:.4f} ± {numbers["population_std"]:.4f} |',
      '', 'Best genotype, and the command that trains it at full size:', '',
      f'    {best["genotype"]}', '',
      f'    {FULL_SIZE_COMMAND.format(best["genotype"])}', '',
      '## Top children', '',
      '| id | parent | accuracy | params | MACs | seconds | mutation |',
      '|---:|---:|---:|---:|---:|---:|---|']
  for r in top:
    parent = '' if r['parent'] is None else r['parent']
    lines.append(f'| {r["id"]} | {parent} | {r["accuracy"]:.4f} | '
                 f'{r["params"]:,} | {si(r["macs"])} | '
                 f'{r["train_seconds"]:.1f} | {r["mutation"]} |')
  return '\n'.join(lines) + '\n'


def searches_beside(workdir: str) -> dict[str, tuple[str, list[float]]]:
  """{directory name: (algorithm, accuracies in order)} of every search in
  the parent directory of `workdir`, this one included."""
  parent = os.path.dirname(os.path.abspath(workdir))
  found = {}
  for name in sorted(os.listdir(parent)):
    path = os.path.join(parent, name, STATE_FILE)
    if not os.path.isfile(path):
      continue
    try:
      with open(path) as f:
        state = json.load(f)['state']
    except (OSError, ValueError, KeyError):
      continue  # Another program's file, or one being replaced.
    found[name] = (state['algorithm'],
                   [r['fitness'] for r in state['history']])
  return found


def progress_figure(searches: dict[str, tuple[str, list[float]]],
                    own: str) -> figure_lib.Figure:
  """Best-so-far accuracy against children trained, one line per search
  (evolution solid, random dashed); `own`'s children as dots."""
  fig = figure_lib.Figure(figsize=(8, 5), layout='constrained')
  ax = fig.subplots()
  cmap = matplotlib.colormaps['tab10']
  for index, (name, (algorithm, accuracies)) in enumerate(searches.items()):
    colour = cmap(index % cmap.N)
    children = range(1, len(accuracies) + 1)
    ax.plot(children, best_so_far(accuracies),
            '-' if algorithm == 'evolution' else '--', color=colour,
            label=f'{name} ({algorithm}) best so far')
    if name == own:
      ax.plot(children, accuracies, '.', color=colour, alpha=0.5,
              label=f'{name} children')
  ax.set_xlabel('children trained')
  ax.set_ylabel('validation accuracy')
  ax.grid(alpha=0.3)
  ax.legend(fontsize='small')
  return fig


def write(workdir: str, records: Sequence[dict[str, Any]],
          population: Sequence[int], algorithm: str, num_children: int,
          elapsed_seconds: float) -> None:
  _atomic_write(os.path.join(workdir, HISTORY_FILE),
                ''.join(json.dumps(r) + '\n' for r in records))
  best = max(records, key=lambda r: r['accuracy'])
  _atomic_write(os.path.join(workdir, BEST_FILE), json.dumps({
      'genotype': best['genotype'], 'record': best,
      'command': FULL_SIZE_COMMAND.format(best['genotype'])}, indent=1))
  numbers = summary(records, population, algorithm, num_children,
                    elapsed_seconds)
  _atomic_write(os.path.join(workdir, SUMMARY_FILE),
                _summary_markdown(numbers, records))
  fig = progress_figure(searches_beside(workdir),
                        os.path.basename(os.path.abspath(workdir)))
  temporary = os.path.join(workdir, PROGRESS_FILE + '.tmp.png')
  fig.savefig(temporary, dpi=100)
  os.replace(temporary, os.path.join(workdir, PROGRESS_FILE))
