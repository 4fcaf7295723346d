"""Sweeps: config overrides x seeds, each setting and seed a train.py run.

A sweep config is a Python file whose get_config() returns a ConfigDict (or a
dict) with these fields; only `base` and `seeds` are required:

  base: the recipe every run starts from, e.g. 'configs/quickstart.py'
    (relative to the current directory, like train.py's --config).
  seeds: the seeds every setting runs with (--config.seed).
  grid: {field: [values]}; the settings are their cartesian product.
  runs: [{field: value}], explicit settings; with a grid, each one is
    combined with every grid point.
  overrides: {field: value}, set in every run.

Each run trains in WORKDIR/<name>, named after its overrides and seed
('learning_rate=0.05,seed=1'), appends its output to train.log there and gets
a DONE file once train.py exits 0. A rerun of the sweep skips those runs and
relaunches the others, which resume from their latest checkpoint.
summary.csv and summary.md hold the last eval record of every run and, per
setting, the mean and sample standard deviation (ddof=1) over seeds;
comparison.png the train and eval curves of every run (jaxcnn/plot.py).
"""

import csv
import dataclasses
import difflib
import importlib.util
import itertools
import json
import logging
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

import ml_collections

from jaxcnn import metrics as metrics_lib
from jaxcnn import plot
from jaxcnn import saved_config

SWEEP_FILE = 'sweep.json'
DONE_FILE = 'DONE'
LOG_FILE = 'train.log'
SUMMARY_CSV = 'summary.csv'
SUMMARY_MD = 'summary.md'
COMPARISON_PNG = 'comparison.png'
FIELDS = ('base', 'seeds', 'grid', 'runs', 'overrides')


class SweepConfigError(ValueError):
  """A sweep config that cannot run, or a workdir holding another sweep."""


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A checked sweep config (see the module docstring)."""
  base: str
  seeds: list[int]
  grid: dict[str, list[Any]]
  runs: list[dict[str, Any]]
  overrides: dict[str, Any]

  def to_json(self) -> dict[str, Any]:
    """The sweep as sweep.json stores it (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class Run:
  """One setting (its overrides, seed excluded) trained with one seed."""
  overrides: dict[str, Any]
  seed: int

  @property
  def setting(self) -> str:
    return _safe_name(','.join(f'{k}={v}'
                               for k, v in sorted(self.overrides.items())))

  @property
  def name(self) -> str:
    return ','.join(filter(None, [self.setting, f'seed={self.seed}']))


@dataclasses.dataclass(frozen=True)
class RunResult:
  run: Run
  status: str  # 'done' or 'failed'.
  exit_code: int
  metrics: dict[str, float]


def _safe_name(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.,=+-]', '_', text)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
  close = difflib.get_close_matches(word, choices, n=1)
  return f' (did you mean {close[0]}?)' if close else ''


def _load_module(path: str, what: str):
  if not os.path.isfile(path):
    raise SweepConfigError(f'{what} {path} not found.')
  spec = importlib.util.spec_from_file_location(
      os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise SweepConfigError(f'{what} {path} has no get_config().')
  return module


def load_recipe(path: str) -> ml_collections.ConfigDict:
  """The ConfigDict of a recipe file, as train.py's --config loads it."""
  return _load_module(path, 'recipe').get_config()


def _check_override(recipe: ml_collections.ConfigDict, key: str, value: Any,
                    where: str) -> None:
  """Raises unless `key` is a field of the recipe that accepts `value`."""
  parent = recipe
  *path, field = key.split('.')
  for part in path:
    parent = parent.get(part) if isinstance(
        parent, ml_collections.ConfigDict) else None
  if not isinstance(parent, ml_collections.ConfigDict) or field not in parent:
    raise SweepConfigError(
        f'unknown field {key!r} in {where}: the base recipe has no such field'
        f'{_did_you_mean(key, list(recipe.keys()))}.')
  try:
    parent[field] = value  # ConfigDict checks the type.
  except TypeError as e:
    raise SweepConfigError(f'bad value for {key} in {where}: {e}') from None


def parse_sweep(raw: dict[str, Any], path: str = 'the sweep config') -> Sweep:
  """Checks the fields of a sweep config and every override key and value."""
  unknown = sorted(set(raw) - set(FIELDS))
  if unknown:
    raise SweepConfigError(
        f'unknown field {unknown[0]!r} in {path}'
        f'{_did_you_mean(unknown[0], FIELDS)}; known: {", ".join(FIELDS)}.')
  for field in ('base', 'seeds'):
    if field not in raw:
      raise SweepConfigError(f'{path} has no {field!r}.')
  seeds = raw['seeds']
  if (not isinstance(seeds, (list, tuple)) or not seeds or
      not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
    raise SweepConfigError(f'seeds in {path} must be a non-empty list of '
                           f'integers, not {seeds!r}.')
  grid = dict(raw.get('grid') or {})
  for key, values in grid.items():
    if not isinstance(values, (list, tuple)) or not values:
      raise SweepConfigError(f'grid field {key} in {path} must be a non-empty '
                             f'list of values, not {values!r}.')
  runs = raw.get('runs') or []
  if not all(isinstance(r, dict) for r in runs):
    raise SweepConfigError(f'runs in {path} must be a list of '
                           '{field: value} dicts.')
  sweep = Sweep(base=raw['base'], seeds=list(seeds),
                grid={k: list(v) for k, v in grid.items()},
                runs=[dict(r) for r in runs],
                overrides=dict(raw.get('overrides') or {}))
  keys = {'grid': set(sweep.grid),
          'runs': set().union(*(r.keys() for r in sweep.runs)),
          'overrides': set(sweep.overrides)}
  for where, fields in keys.items():
    if 'seed' in fields:
      raise SweepConfigError(f'seed set in {where} of {path}: list the seeds '
                             'in `seeds`.')
  for (where, fields), (other, others) in itertools.combinations(
      keys.items(), 2):
    both = sorted(fields & others)
    if both:
      raise SweepConfigError(f'{both[0]} is set in both {where} and {other} '
                             f'of {path}.')
  recipe = load_recipe(sweep.base)
  settings = ([('grid', k, v) for k, values in sweep.grid.items()
               for v in values] +
              [(f'runs[{i}]', k, v) for i, run in enumerate(sweep.runs)
               for k, v in run.items()] +
              [('overrides', k, v) for k, v in sweep.overrides.items()])
  for where, key, value in settings:
    _check_override(recipe, key, value, f'{where} of {path}')
  return sweep


def load_sweep(path: str) -> Sweep:
  """Loads and checks the sweep config file at `path`."""
  raw = _load_module(path, 'sweep config').get_config()
  if isinstance(raw, ml_collections.ConfigDict):
    raw = raw.to_dict()
  return parse_sweep(raw, path)


def expand(sweep: Sweep) -> list[Run]:
  """Every setting (runs x grid points) with every seed, seeds innermost."""
  keys = sorted(sweep.grid)
  points = [dict(zip(keys, values))
            for values in itertools.product(*(sweep.grid[k] for k in keys))]
  runs = [Run({**explicit, **point}, seed)
          for explicit in sweep.runs or [{}] for point in points
          for seed in sweep.seeds]
  seen = set()
  for run in runs:
    if run.name in seen:
      raise SweepConfigError(f'two runs would both be named {run.name}: make '
                             'the settings distinct.')
    seen.add(run.name)
  return runs


def check_workdir(workdir: str, sweep: Sweep) -> None:
  """Writes WORKDIR/sweep.json, or refuses a workdir holding another sweep."""
  path = os.path.join(workdir, SWEEP_FILE)
  current = sweep.to_json()
  changes = saved_config.differences(path, current)
  if changes:
    raise SweepConfigError(
        f'{workdir} holds a sweep with a different sweep config ({changes}). '
        'Pass a new --workdir for this sweep.')
  os.makedirs(workdir, exist_ok=True)
  saved_config.write(path, current)


def train_command(sweep: Sweep, run: Run, run_dir: str, train_py: str,
                  data_dir: str | None = None) -> list[str]:
  """The train.py command line of `run`."""
  overrides = {**sweep.overrides, **run.overrides, 'seed': run.seed}
  if data_dir:
    overrides['data_dir'] = data_dir
  return [sys.executable, train_py, f'--config={sweep.base}',
          f'--workdir={run_dir}',
          *(f'--config.{k}={v}' for k, v in overrides.items())]


def is_done(run_dir: str) -> bool:
  return os.path.exists(os.path.join(run_dir, DONE_FILE))


def last_line(path: str) -> str:
  """The last non-empty line of a (log) file, '' if none."""
  with open(path, 'rb') as f:
    f.seek(max(0, os.path.getsize(path) - 8192))
    lines = f.read().decode(errors='replace').splitlines()
  return next((line.strip() for line in reversed(lines) if line.strip()), '')


def _launch(command: list[str], run_dir: str) -> subprocess.Popen:
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, LOG_FILE), 'a') as log:
    log.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} sweep launches: '
              f'{shlex.join(command)}\n')
    log.flush()
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def _finish(name: str, command: list[str], run_dir: str, code: int,
            seconds: float) -> None:
  if code == 0:
    with open(os.path.join(run_dir, DONE_FILE), 'w') as f:
      f.write(shlex.join(command) + '\n')
    logging.info('done %s in %.0f s', name, seconds)
    return
  log = os.path.join(run_dir, LOG_FILE)
  logging.error('FAILED %s: exit %d: %s (log: %s)', name, code, last_line(log),
                log)


def run_all(jobs: Sequence[tuple[str, list[str], str]], parallel: int,
            poll_seconds: float = 0.2) -> dict[str, int]:
  """Runs (name, command, run_dir) jobs, `parallel` at a time.

  Returns their exit codes by name. On an exception (Ctrl-C, SIGTERM made
  SystemExit), running jobs get SIGTERM, which makes train.py save a
  checkpoint, and are waited for: none is left running without the sweep.
  """
  waiting = list(jobs)
  running: dict[str, tuple[subprocess.Popen, list[str], str, float]] = {}
  codes = {}
  try:
    while waiting or running:
      while waiting and len(running) < parallel:
        name, command, run_dir = waiting.pop(0)
        logging.info('start %s (log: %s)', name,
                     os.path.join(run_dir, LOG_FILE))
        running[name] = (_launch(command, run_dir), command, run_dir,
                         time.monotonic())
      time.sleep(poll_seconds)
      for name, (process, command, run_dir, start) in list(running.items()):
        if process.poll() is not None:
          del running[name]
          codes[name] = process.returncode
          _finish(name, command, run_dir, process.returncode,
                  time.monotonic() - start)
  finally:
    for process, *_ in running.values():
      process.terminate()
    for process, *_ in running.values():
      process.wait()
  return codes


def final_metrics(run_dir: str) -> dict[str, float]:
  """The last record of the run's metrics.jsonl holding eval metrics."""
  for record in reversed(metrics_lib.read_metrics(run_dir)):
    if any(k.startswith('eval/') for k in record):
      return record
  return {}


def run_sweep(sweep: Sweep, runs: Sequence[Run], workdir: str, train_py: str,
              parallel: int = 1,
              data_dir: str | None = None) -> list[RunResult]:
  """Runs the runs not done yet; the results of all of them."""
  jobs = []
  for run in runs:
    run_dir = os.path.join(workdir, run.name)
    if is_done(run_dir):
      logging.info('skip %s: finished earlier (%s)', run.name,
                   os.path.join(run_dir, DONE_FILE))
    else:
      jobs.append((run.name, train_command(sweep, run, run_dir, train_py,
                                           data_dir), run_dir))
  codes = run_all(jobs, parallel)
  return collect_results(workdir, runs, codes)


def collect_results(workdir: str, runs: Sequence[Run],
                    exit_codes: dict[str, int]) -> list[RunResult]:
  """Each run's status and final metrics; `exit_codes` of the failed ones."""
  results = []
  for run in runs:
    run_dir = os.path.join(workdir, run.name)
    if is_done(run_dir):
      results.append(RunResult(run, 'done', 0, final_metrics(run_dir)))
    else:
      results.append(RunResult(run, 'failed', exit_codes[run.name], {}))
  return results


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (ddof=1; None for one value)."""
  return (statistics.mean(values),
          statistics.stdev(values) if len(values) > 1 else None)


def _metric_names(results: Sequence[RunResult]) -> list[str]:
  return sorted({k for r in results for k in r.metrics if k != 'step'})


def _override_names(results: Sequence[RunResult]) -> list[str]:
  return sorted({k for r in results for k in r.run.overrides})


def by_setting(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
  """The results grouped by setting, in the order settings first appear."""
  groups: dict[str, list[RunResult]] = {}
  for result in results:
    groups.setdefault(result.run.setting, []).append(result)
  return groups


def write_csv(path: str, results: Sequence[RunResult]) -> None:
  """One row per run: name, status, exit code, overrides, seed, metrics."""
  overrides, metrics = _override_names(results), _metric_names(results)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['name', 'status', 'exit_code', *overrides, 'seed', 'step',
                     *metrics])
    for r in results:
      writer.writerow(
          [r.run.name, r.status, r.exit_code,
           *(r.run.overrides.get(k, '') for k in overrides), r.run.seed,
           r.metrics.get('step', ''), *(r.metrics.get(k, '') for k in metrics)])


def _cell(value: Any) -> str:
  return str(value).replace('|', '\\|')


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ['| ' + ' | '.join(_cell(h) for h in header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_cell(v) for v in row) + ' |' for row in rows]
  return lines


def format_mean_std(values: Sequence[float]) -> str:
  """'mean ± std' with 4 decimals; the mean alone for one value."""
  if not values:
    return '-'
  mean, std = mean_std(values)
  return f'{mean:.4f}' if std is None else f'{mean:.4f} ± {std:.4f}'


def write_markdown(path: str, sweep: Sweep,
                   results: Sequence[RunResult]) -> None:
  """Mean ± sample std per setting over its finished seeds, then every run."""
  overrides, metrics = _override_names(results), _metric_names(results)
  fixed = ', '.join(f'`{k}={v}`' for k, v in sweep.overrides.items())
  lines = [f'# Sweep over `{sweep.base}`', '',
           f'Seeds {", ".join(map(str, sweep.seeds))}; fixed overrides: '
           f'{fixed or "none"}. Metrics: the last eval record of each run\'s '
           'metrics.jsonl; mean ± sample standard deviation (ddof=1) over the '
           'seeds of a setting that finished.', '']
  rows = []
  for group in by_setting(results).values():
    done = [r for r in group if r.status == 'done']
    rows.append([*(group[0].run.overrides.get(k, '') for k in overrides),
                 f'{len(done)}/{len(group)}',
                 *(format_mean_std([r.metrics[k] for r in done
                                    if k in r.metrics]) for k in metrics)])
  lines += _table([*overrides, 'seeds done', *metrics], rows)
  lines += ['', '## Runs', '']
  rows = [[r.run.name, r.status if r.status == 'done'
           else f'{r.status} (exit {r.exit_code})',
           *(f'{r.metrics[k]:.4f}' if k in r.metrics else '-'
             for k in metrics)] for r in results]
  lines += _table(['run', 'status', *metrics], rows)
  lines += ['', f'![Train and eval curves of every run]({COMPARISON_PNG})']
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def write_summary(workdir: str, sweep: Sweep,
                  results: Sequence[RunResult]) -> None:
  """WORKDIR/summary.csv, WORKDIR/summary.md and WORKDIR/comparison.png."""
  write_csv(os.path.join(workdir, SUMMARY_CSV), results)
  write_markdown(os.path.join(workdir, SUMMARY_MD), sweep, results)
  plot.write({r.run.name: metrics_lib.read_metrics(
      os.path.join(workdir, r.run.name)) for r in results},
             os.path.join(workdir, COMPARISON_PNG))
