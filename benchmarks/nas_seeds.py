"""Evolution against random search over seeds, at the configs' own budget.

  python -m benchmarks.nas_seeds --root=/tmp/nas --seeds=0,1,2 --parallel=2

Runs (or resumes: nas.py skips finished children, a finished search costs
its start-up) `python nas.py --config=C --config.seed=S` for every config
and seed into ROOT/seedS/ALGORITHM, so each seed's progress.png shows its
searches side by side. Then prints, and writes to ROOT/seeds.md, one row per
search (best and final-population accuracy, children per hour, minutes)
and one per algorithm (mean ± std over the seeds). `--norun` only reads.
"""

import importlib
import json
import os
import statistics
import subprocess
import sys
from typing import Any, Sequence

from absl import app
from absl import flags

from jaxcnn.search import report as search_report

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_FILE = 'seeds.md'


def _define_flags() -> None:
  """Only when run as a script: the module is also a library."""
  flags.DEFINE_list('configs', ['configs/nas/digits_evolution.py',
                                'configs/nas/digits_random.py'],
                    'Search configs, one search per config and seed.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Values of --config.seed.')
  flags.DEFINE_string('root', '/tmp/nas', 'Searches go to ROOT/seedS/ALG.')
  flags.DEFINE_integer('parallel', 2, "nas.py's --parallel.")
  flags.DEFINE_bool('run', True, 'Run missing searches; --norun only reads.')


def algorithm_of(config_path: str) -> str:
  module = os.path.splitext(os.path.relpath(os.path.join(ROOT, config_path),
                                            ROOT))[0]
  return importlib.import_module(module.replace(os.sep, '.')).get_config(
  ).algorithm


def search_numbers(workdir: str) -> dict[str, Any]:
  """summary.md's numbers of the search in `workdir`, from its state."""
  with open(os.path.join(workdir, search_report.STATE_FILE)) as f:
    saved = json.load(f)
  with open(os.path.join(workdir, search_report.HISTORY_FILE)) as f:
    records = [json.loads(line) for line in f]
  state = saved['state']
  return search_report.summary(records, state['population'],
                               state['algorithm'], state['num_children'],
                               saved['elapsed_seconds'])


def _mean_std(values: Sequence[float]) -> str:
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f'{statistics.fmean(values):.4f} ± {std:.4f}'


def table(searches: dict[tuple[str, int], dict[str, Any]]) -> str:
  """Markdown: a row per (algorithm, seed), then one per algorithm."""
  lines = ['| algorithm | seed | children | best accuracy | final population '
           'accuracy (mean) | children per hour | minutes |',
           '|---|---:|---:|---:|---:|---:|---:|']
  for (algorithm, seed), n in sorted(searches.items()):
    lines.append(
        f'| {algorithm} | {seed} | {n["children"]}/{n["num_children"]} | '
        f'{n["best_accuracy"]:.4f} | {n["population_mean"]:.4f} | '
        f'{n["children_per_hour"]:.1f} | {60 * n["hours"]:.1f} |')
  lines += ['', '| algorithm | seeds | best accuracy (mean ± std) | final '
            'population accuracy (mean ± std) | children per hour (mean) | '
            'minutes (max) |', '|---|---:|---:|---:|---:|---:|']
  for algorithm in sorted({a for a, _ in searches}):
    runs = [n for (a, _), n in sorted(searches.items()) if a == algorithm]
    lines.append(
        f'| {algorithm} | {len(runs)} | '
        f'{_mean_std([n["best_accuracy"] for n in runs])} | '
        f'{_mean_std([n["population_mean"] for n in runs])} | '
        f'{statistics.fmean(n["children_per_hour"] for n in runs):.1f} | '
        f'{max(60 * n["hours"] for n in runs):.1f} |')
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f'FATAL unexpected arguments: {" ".join(argv[1:])}')
  algorithms = {config: algorithm_of(config) for config in FLAGS.configs}
  if len(set(algorithms.values())) < len(algorithms):
    sys.exit('FATAL --configs: two configs of one algorithm would share '
             'ROOT/seedS/ALGORITHM; run them with separate --root.')
  searches = {}
  for seed in (int(s) for s in FLAGS.seeds):
    for config, algorithm in algorithms.items():
      workdir = os.path.join(FLAGS.root, f'seed{seed}', algorithm)
      if FLAGS.run:
        command = [sys.executable, 'nas.py', f'--config={config}',
                   f'--workdir={workdir}', f'--parallel={FLAGS.parallel}',
                   f'--config.seed={seed}']
        print(' '.join(command[1:]), flush=True)
        if subprocess.run(command, cwd=ROOT).returncode:
          sys.exit(f'FATAL the search in {workdir} failed: rerun to resume.')
      if os.path.exists(os.path.join(workdir, search_report.STATE_FILE)):
        searches[(algorithm, seed)] = search_numbers(workdir)
  if not searches:
    sys.exit(f'FATAL no search under {FLAGS.root}: run without --norun.')
  text = table(searches)
  with open(os.path.join(FLAGS.root, TABLE_FILE), 'w') as f:
    f.write(text)
  print(text, end='')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
