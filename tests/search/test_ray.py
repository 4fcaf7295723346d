"""The Ray executor trains a search's children as Ray tasks on a local Ray
instance (2 CPUs), with the outputs of a local search."""

import json

import numpy as np
import pytest
import ray

from configs.nas import digits_evolution
from jaxcnn import metrics
from jaxcnn.search import executors
from jaxcnn.search import run
from tests.search import helpers

pytestmark = pytest.mark.cost_seconds(105)


def test_a_search_runs_its_children_as_ray_tasks(tmp_path, compilation_cache):
  config = digits_evolution.get_config()
  helpers.apply(config, helpers.TINY, num_children=2, population_size=2,
                ops='id,avg3,max3', compilation_cache_dir=compilation_cache)
  run.check_config(config)
  ray.init(num_cpus=2, include_dashboard=False,
           runtime_env=executors.ray_runtime_env())
  try:
    lines = []
    executor = executors.RayExecutor(None, xla_flags=config.child_xla_flags)
    search = run.run(config, str(tmp_path), executor,
                     parallel=2, log=lines.append)
  finally:
    ray.shutdown()
  assert len(lines) == 2 and search.done
  with open(tmp_path / 'history.jsonl') as f:
    history = [json.loads(line) for line in f]
  # The children are the seed's first two random genotypes.
  space = run.space_of(config)
  rng = np.random.Generator(np.random.PCG64(config.seed))
  expected = [space.sample_string(rng) for _ in range(2)]
  assert sorted(r['genotype'] for r in history) == sorted(expected)
  for r in history:
    assert r['params'] > 1000
    assert r['accuracy'] == metrics.read_metrics(
        str(tmp_path / r['workdir']))[-1]['eval/accuracy']
  assert run.open_search(config, str(tmp_path))[0].done  # Saved as done.
