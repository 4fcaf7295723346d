"""A search in its workdir: checked config, saved state, the search loop.

WORKDIR/search.json holds the search config and state (population, history,
pending children, RNG), replaced atomically after every proposal and every
finished child; children train in WORKDIR/children/NNNNNN. Rerunning the
same command on the workdir resumes: finished children are kept, children
in flight are trained again from their own checkpoints (or their
result.json when they had finished), and nothing is drawn twice. With one
child at a time the history is then the one an uninterrupted search
writes, all but the measured `train_seconds`. With K at a time children are
reported in the order they finish, which timing decides: each child's
genotype, seed and accuracy are still reproducible, and none is lost or
trained twice, but which children are proposed depends on that order.
"""

import concurrent.futures
import json
import os
import time
from typing import Any, Callable

import ml_collections
import numpy as np

from jaxcnn.data import catalog
from jaxcnn.search import children
from jaxcnn.search import evolution
from jaxcnn.search import executors as executors_lib
from jaxcnn.search import report
from jaxcnn.search import space as space_lib

STATE_FILE = report.STATE_FILE
CHILDREN_DIR = 'children'
CACHE_DIR = 'compilation_cache'


class SearchError(ValueError):
  """A config, workdir or child the search cannot use; one line."""


def _field_problems(config: ml_collections.ConfigDict) -> list[str]:
  problems = []

  def bad(field, reason):
    problems.append(f'--config.{field}={config[field]!r}: {reason}')

  def integer(field, low, high=None):
    value = config[field]
    if (not isinstance(value, int) or isinstance(value, bool) or
        value < low or (high is not None and value > high)):
      bad(field, f'must be an integer >= {low}' +
          (f' and <= {high}' if high is not None else ''))

  if config.algorithm not in evolution.ALGORITHMS:
    bad('algorithm', f'must be one of {", ".join(evolution.ALGORITHMS)}')
  integer('population_size', 1)
  integer('sample_size', 1)
  integer('num_children', 1)
  integer('num_blocks', 1)
  integer('validation_percent', 1, 99)
  integer('seed', 0, children.SEED_LIMIT - 1)
  p = config.identity_probability
  if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
    bad('identity_probability', 'must be a number in [0, 1]')
  try:
    space_lib.op_set(config.ops)
  except ValueError as e:
    bad('ops', str(e))
  return problems


def space_of(config: ml_collections.ConfigDict) -> space_lib.CellSpace:
  return space_lib.CellSpace(space_lib.op_set(config.ops), config.num_blocks)


def child_base(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The child train config on the validation split of its dataset."""
  child = ml_collections.ConfigDict(config.child.to_dict())
  child.dataset = children.validation_dataset(child.dataset,
                                              config.validation_percent)
  child.lock()
  return child


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises SearchError naming every bad field, the child's included."""
  from jaxcnn import config_check  # After validation_dataset registers.
  problems = _field_problems(config)
  if not problems:
    space = space_of(config)
    for i, text in enumerate(config.initial_genotypes):
      try:
        space.parse(text)
      except ValueError as e:
        problems.append(f'--config.initial_genotypes[{i}]: {e}')
  dataset = config.child.dataset
  tfds_datasets = sorted(n for n in catalog.names('classification')
                         if n in catalog.DATASETS and ':val' not in n)
  if dataset not in tfds_datasets:
    problems.append(f'--config.child.dataset={dataset!r}: a search needs a '
                    'tfds dataset to take its validation split from; one of '
                    f'{", ".join(tfds_datasets)}')
  elif not problems:
    # As a child trains it: with a genotype of the space and a seed.
    child = children.child_config(
        child_base(config), space_of(config).sample_string(
            np.random.default_rng(0)), 0)
    try:
      config_check.check(child)
    except config_check.ConfigError as e:
      problems += [p.replace('--config.', '--config.child.', 1)
                   for p in e.problems]
  if problems:
    raise SearchError('; '.join(problems))


def _config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def _write_json(path: str, data: Any) -> None:
  """Written whole or not at all (a kill leaves the previous file)."""
  temporary = f'{path}.tmp'
  with open(temporary, 'w') as f:
    json.dump(data, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


def open_search(config: ml_collections.ConfigDict,
                workdir: str) -> tuple[evolution.Search, float]:
  """The search saved in `workdir` (and its elapsed seconds), or a new one;
  SearchError when the workdir holds something else."""
  path = os.path.join(workdir, STATE_FILE)
  current = _config_json(config)
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (OSError, ValueError) as e:
      raise SearchError(f'{path} cannot be read ({e}): restore it, or start '
                        'the search in a new --workdir.') from None
    if saved['config'] != current:
      fields = sorted(_differences(saved['config'], current))
      raise SearchError(
          f'{workdir} holds another search (its config differs in '
          f'{", ".join(fields)}): rerun it with its own config to resume, or '
          'pass a new --workdir.')
    return (evolution.Search.from_json(saved['state']),
            saved['elapsed_seconds'])
  if os.path.isfile(workdir):
    raise SearchError(f'--workdir={workdir} is a file, not a directory.')
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise SearchError(f'--workdir={workdir} is not empty and holds no search '
                      f'({STATE_FILE}): pass a new or empty --workdir.')
  search = evolution.Search(config.algorithm, config.population_size,
                            config.sample_size, config.num_children,
                            config.seed)
  return search, 0.0


def _differences(a: Any, b: Any, prefix: str = '') -> set[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    return set().union(*(_differences(a.get(k), b.get(k), f'{prefix}{k}.')
                         for k in set(a) | set(b)))
  return set() if a == b else {prefix.rstrip('.')}


def save(config: ml_collections.ConfigDict, workdir: str,
         search: evolution.Search, elapsed: float) -> None:
  _write_json(os.path.join(workdir, STATE_FILE), {
      'config': _config_json(config), 'state': search.to_json(),
      'elapsed_seconds': round(elapsed, 2)})


def _progress_line(search: evolution.Search, record: dict[str, Any]) -> str:
  best = search.best()
  return (f'child {len(search.history)}/{search.num_children} '
          f'({search.algorithm}, id {record["id"]}): accuracy '
          f'{record["fitness"]:.4f}, best {best["fitness"]:.4f} (id '
          f'{best["id"]}), {record["params"]:,} params, '
          f'{report.si(record["macs"])} MACs, {record["train_seconds"]:.1f} s; '
          f'{record["mutation"]}' +
          (f' from {record["parent"]}' if record['parent'] is not None else ''))


def run(config: ml_collections.ConfigDict, workdir: str,
        executor: executors_lib.Executor, parallel: int,
        log: Callable[[str], None] = print) -> evolution.Search:
  """Runs (or resumes) the search to its end; outputs after every child."""
  workdir = os.path.abspath(workdir)
  search, elapsed = open_search(config, workdir)
  os.makedirs(os.path.join(workdir, CHILDREN_DIR), exist_ok=True)
  started = time.monotonic()
  space = space_of(config)
  base = child_base(config)
  cache = config.compilation_cache_dir or os.path.join(workdir, CACHE_DIR)
  initial = list(config.initial_genotypes)

  def sample(rng):
    n = search.proposed
    return initial[n] if n < len(initial) else space.sample_string(rng)

  def mutate(arch, rng):
    return space.mutate_string(arch, rng, config.identity_probability)

  def checkpoint() -> float:
    seconds = elapsed + time.monotonic() - started
    save(config, workdir, search, seconds)
    return seconds

  in_flight: dict[concurrent.futures.Future, evolution.Proposal] = {}

  def submit(proposal):
    child_dir = os.path.join(workdir, CHILDREN_DIR, f'{proposal.id:06d}')
    task = children.Task(
        proposal.id, children.child_config(
            base, proposal.arch,
            children.child_seed(config.seed, proposal.id)).to_dict(),
        child_dir, cache)
    in_flight[executor.submit(task)] = proposal

  for proposal in search.pending:  # In flight when the search stopped.
    submit(proposal)
  try:
    while not search.done:
      while len(in_flight) < parallel:
        proposal = search.propose(sample, mutate)
        if proposal is None:
          break
        checkpoint()
        submit(proposal)
      finished, _ = concurrent.futures.wait(
          in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in sorted(finished, key=lambda f: in_flight[f].id):
        proposal = in_flight.pop(future)
        record = search.report(proposal, *_outcome(proposal, future,
                                                   workdir))
        seconds = checkpoint()
        report.write(workdir, record_fields(search), search.population,
                     search.algorithm, search.num_children, seconds)
        log(_progress_line(search, record))
  finally:
    executor.shutdown(stop_children=bool(in_flight))
  return search


def _outcome(proposal: evolution.Proposal, future: concurrent.futures.Future,
             workdir: str) -> tuple[float, dict[str, Any]]:
  """(accuracy, other fields) of a finished child; a diverged child scores
  0, any other failure stops the search."""
  child_dir = os.path.join(CHILDREN_DIR, f'{proposal.id:06d}')
  try:
    result = future.result()
  except FloatingPointError as e:
    result = {'accuracy': 0.0, 'params': 0, 'macs': 0.0, 'train_seconds': 0.0,
              'error': ' '.join(str(e).split())}
  except Exception as e:  # Whatever the training raised, on one line.
    message = ' '.join(str(e).split())[:500]
    raise SearchError(
        f'Child {proposal.id} failed ({type(e).__name__}: {message}); see '
        f'{os.path.join(workdir, child_dir, children.LOG_FILE)}. Rerun the '
        'same command to retry it.') from None
  result = dict(result)
  return result.pop('accuracy'), {**result, 'workdir': child_dir}


def record_fields(search: evolution.Search) -> list[dict[str, Any]]:
  """history.jsonl's records: id, parent, mutation, genotype, accuracy,
  params, macs, train_seconds, workdir (relative to the search's)."""
  return [{'id': r['id'], 'parent': r['parent'], 'mutation': r['mutation'],
           'genotype': r['arch'], 'accuracy': r['fitness'],
           **{k: v for k, v in r.items()
              if k not in ('id', 'parent', 'mutation', 'arch', 'fitness')}}
          for r in search.history]
