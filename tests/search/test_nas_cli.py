"""nas.py: a smoke search of real children (6 children, P=4, S=2, two
workers), its outputs, rerunning it, and one-line errors."""

import json
import os

import pytest

from jaxcnn import metrics
from tests.search.helpers import CHEAP_OPS
from tests.search.helpers import run_nas

pytestmark = pytest.mark.cost_seconds(205)

SMOKE = [CHEAP_OPS, '--config.num_children=6', '--config.population_size=4',
         '--config.sample_size=2']
RECORD_FIELDS = ['id', 'parent', 'mutation', 'genotype', 'accuracy', 'params',
                 'macs', 'train_seconds', 'workdir']


@pytest.fixture(scope='module')
def smoke(tmp_path_factory, nas_command):
  workdir = str(tmp_path_factory.mktemp('searches') / 'evolution')
  command = nas_command(workdir, *SMOKE, parallel=2)
  done = run_nas(command)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, command, done


def _history(workdir):
  with open(os.path.join(workdir, 'history.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_smoke_search_trains_six_children_and_writes_its_outputs(smoke):
  workdir, _, done = smoke
  history = _history(workdir)
  assert [list(r) for r in history] == [RECORD_FIELDS] * 6
  assert sorted(r['id'] for r in history) == list(range(6))
  initial = [r for r in history if r['id'] < 4]
  assert {r['mutation'] for r in initial} == {'random'}
  for r in history:
    # The child's own run: its final evaluation on the held-out split.
    assert r['accuracy'] == metrics.read_metrics(
        os.path.join(workdir, r['workdir']))[-1]['eval/accuracy']
    assert r['params'] > 1000 and r['macs'] > 1000 and r['train_seconds'] > 0
    assert os.path.exists(os.path.join(workdir, r['workdir'], 'result.json'))
    if r['id'] >= 4:  # Mutants of a member reported before them.
      assert r['mutation'].split()[0] in ('hidden', 'op', 'identity')
      assert r['parent'] in [h['id'] for h in history[:history.index(r)]]
  progress = [l for l in done.stdout.splitlines() if l.startswith('child ')]
  assert [l.split()[1] for l in progress] == [f'{i}/6' for i in range(1, 7)]
  with open(os.path.join(workdir, 'best.json')) as f:
    best = json.load(f)
  top = max(history, key=lambda r: r['accuracy'])
  assert best['record'] == top and best['genotype'] == top['genotype']
  with open(os.path.join(workdir, 'summary.md')) as f:
    summary = f.read()
  assert f'| {top["accuracy"]:.4f} (child {top["id"]}) |' in summary
  with open(os.path.join(workdir, 'progress.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_the_best_genotype_passes_the_full_size_recipes_check(smoke):
  from configs import nasnet_cifar10
  from jaxcnn import config_check
  with open(os.path.join(smoke[0], 'best.json')) as f:
    genotype = json.load(f)['genotype']
  config = nasnet_cifar10.get_config()
  config.model_kwargs.unlock()
  config.model_kwargs.genotype = genotype
  config_check.check(config)
  config.model_kwargs.genotype = genotype.replace(':', ';', 1)
  with pytest.raises(config_check.ConfigError, match='Genotype'):
    config_check.check(config)


def test_rerunning_a_finished_search_trains_nothing(smoke):
  workdir, command, _ = smoke
  before = _history(workdir)
  again = run_nas(command)
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'Search complete' in again.stdout
  assert not [l for l in again.stdout.splitlines() if l.startswith('child ')]
  assert _history(workdir) == before


def test_another_searchs_workdir_is_refused(smoke):
  workdir, command, _ = smoke
  with open(os.path.join(workdir, 'search.json')) as f:
    state = f.read()
  refused = run_nas(command + ['--config.seed=1',
                               '--config.child.num_steps=3'])
  assert refused.returncode != 0
  [line] = refused.stderr.strip().splitlines()
  assert line == (f'FATAL {workdir} holds another search (its config differs '
                  'in child.num_steps, seed): rerun it with its own config to '
                  'resume, or pass a new --workdir.')
  with open(os.path.join(workdir, 'search.json')) as f:
    assert f.read() == state


def test_bad_fields_are_named_on_one_line(tmp_path, nas_command):
  workdir = tmp_path / 'new'
  refused = run_nas(nas_command(
      workdir, '--config.population_size=0', '--config.ops=sep3,conv9',
      '--config.child.batch_size=0'))
  assert refused.returncode != 0
  [line] = refused.stderr.strip().splitlines()
  assert line.startswith('FATAL --config.population_size=0: must be an '
                         'integer >= 1; --config.ops=')
  assert "unknown op(s) 'conv9'" in line
  assert not workdir.exists()
  refused = run_nas(nas_command(workdir, '--config.child.batch_size=0'))
  [line] = refused.stderr.strip().splitlines()
  assert line == 'FATAL --config.child.batch_size=0: must be a positive integer'


def test_an_invalid_genotype_string_is_refused(tmp_path, nas_command):
  refused = run_nas(nas_command(
      tmp_path / 'new', "--config.initial_genotypes=('normal=0:sep3',)"))
  assert refused.returncode != 0
  [line] = refused.stderr.strip().splitlines()
  assert line.startswith('FATAL --config.initial_genotypes[0]: Genotype ')
  assert 'is not "state:op+state:op"' in line
