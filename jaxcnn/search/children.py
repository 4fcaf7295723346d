"""A search child: its train config, and its training in a worker process.

A child is a real run of the training loop, `trainer.train_and_evaluate`,
in its own workdir (`WORKDIR/children/NNNNNN`): the search's `child` train
config with the child's genotype and seed. It trains on the first
`100 - validation_percent` % of the dataset's train split and is scored on
the rest (the `DATASET:valN` split registered here), never on the test
split that final results are reported on.

`train` runs in a worker (a process of the local pool or a Ray task): it
imports JAX itself, writes the run's log to the child's `train.log`, and
leaves `result.json` when done, so a child that finished is never trained
again (rerunning it returns that file).
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Iterator

import ml_collections

from jaxcnn.data import catalog

RESULT_FILE = 'result.json'
LOG_FILE = 'train.log'
SEED_LIMIT = 2**27  # config_check's bound on --config.seed.


def validation_dataset(name: str, percent: int) -> str:
  """Registers (once per process) and returns the dataset `NAME:valN`: the
  first 100-N % of NAME's train split to train on, the last N % to score."""
  alias = f'{name}:val{percent}'
  if alias not in catalog.DATASETS:
    spec = catalog.get_spec(name)
    cut = 100 - percent
    catalog.DATASETS[alias] = dataclasses.replace(
        spec, train_split=f'{spec.train_split}[:{cut}%]',
        eval_split=f'{spec.train_split}[{cut}%:]')
  return alias


def base_dataset(alias: str) -> str:
  return alias.rsplit(':val', 1)[0]


def child_seed(search_seed: int, child_id: int) -> int:
  return (search_seed * 100_003 + child_id) % SEED_LIMIT


def child_config(child: ml_collections.ConfigDict, genotype: str,
                 seed: int) -> ml_collections.ConfigDict:
  """`child` (a locked train config) for one genotype and seed."""
  config = ml_collections.ConfigDict(child.to_dict())
  config.model_kwargs.genotype = genotype
  config.seed = seed
  config.lock()
  return config


@dataclasses.dataclass(frozen=True)
class Task:
  """What a worker needs to train one child (picklable, JSON-able)."""
  id: int
  config: dict[str, Any]  # child_config(...).to_dict()
  workdir: str  # Absolute.
  compilation_cache_dir: str | None


@contextlib.contextmanager
def _output_to(path: str) -> Iterator[None]:
  """Sends this process's stdout and stderr (Python's, absl's and XLA's) to
  `path`, appending, for the duration."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(1), os.dup(2)]
  with open(path, 'a') as log:
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
      yield
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      for fd, copy in zip((1, 2), saved):
        os.dup2(copy, fd)
        os.close(copy)


def _cost(config: ml_collections.ConfigDict) -> tuple[int, float]:
  """Parameters and MACs (flops / 2 of XLA's cost analysis of the forward
  pass on one image, as `python -m jaxcnn.summary` counts 'XLA MACs')."""
  import jax
  import jax.numpy as jnp
  from jaxcnn import tasks
  model = tasks.create(config).model({})
  images = jax.ShapeDtypeStruct(
      (1, config.image_size, config.image_size, model.in_channels),
      jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  params = sum(math.prod(x.shape) for x in jax.tree.leaves(
      variables['params']))
  cost = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, images).cost_analysis()
  return params, float((cost or {}).get('flops', 0.0)) / 2


def _use_compilation_cache(directory: str | None) -> None:
  """Children of one shape (an identity mutation, a rerun) compile once."""
  import jax
  if directory and jax.config.jax_compilation_cache_dir != directory:
    jax.config.update('jax_compilation_cache_dir', directory)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def train(task: Task) -> dict[str, Any]:
  """Trains the child (resuming its checkpoint if any) and returns
  {'accuracy', 'params', 'macs', 'train_seconds'}; a finished child's
  result.json is returned as it is."""
  result_path = os.path.join(task.workdir, RESULT_FILE)
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  os.makedirs(task.workdir, exist_ok=True)
  config = ml_collections.ConfigDict(task.config)
  alias = config.dataset
  validation_dataset(base_dataset(alias),
                     int(alias.rsplit(':val', 1)[1]))
  config.lock()
  with _output_to(os.path.join(task.workdir, LOG_FILE)):
    from absl import logging
    from jaxcnn import trainer
    from jaxcnn.data import datasets
    logging.set_verbosity(logging.INFO)
    _use_compilation_cache(task.compilation_cache_dir)
    # Prepares an embedded dataset, which its alias would not.
    datasets.load_builder(base_dataset(alias), config.data_dir,
                          config.download)
    start = time.perf_counter()
    metrics = trainer.train_and_evaluate(config, task.workdir)
    seconds = time.perf_counter() - start
    params, macs = _cost(config)
  result = {'accuracy': float(metrics['eval/accuracy']), 'params': params,
            'macs': macs, 'train_seconds': round(seconds, 2)}
  temporary = result_path + '.tmp'
  with open(temporary, 'w') as f:
    json.dump(result, f)
  os.replace(temporary, result_path)
  return result
