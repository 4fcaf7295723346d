"""sweep.py: expansion and naming, summaries, one-line errors, and a real sweep
of train.py runs that fails, resumes and skips."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from jaxcnn import metrics
from jaxcnn import sweep

pytestmark = pytest.mark.cost_seconds(150)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, 'configs', 'quickstart.py')
# Quickstart shrunk to 20 steps, with a checkpoint at 10 to resume from.
SHORT = dict(num_steps=20, checkpoint_every_steps=10, keep_checkpoints=3,
             log_every_steps=10, progress_bar=False)


def _write_sweep(path, **fields) -> str:
  with open(path, 'w') as f:
    f.write(f'def get_config():\n  return {fields!r}\n')
  return str(path)


def _sweep(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, 'sweep.py', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)


def _names(**fields):
  return [run.name for run in sweep.expand(sweep.parse_sweep(
      dict(base=BASE, **fields)))]


def test_grid_times_seeds_gives_one_named_run_each():
  assert _names(seeds=[0, 1], grid={'learning_rate': [0.05, 0.1],
                                    'batch_size': [32, 64]}) == [
      'batch_size=32,learning_rate=0.05,seed=0',
      'batch_size=32,learning_rate=0.05,seed=1',
      'batch_size=32,learning_rate=0.1,seed=0',
      'batch_size=32,learning_rate=0.1,seed=1',
      'batch_size=64,learning_rate=0.05,seed=0',
      'batch_size=64,learning_rate=0.05,seed=1',
      'batch_size=64,learning_rate=0.1,seed=0',
      'batch_size=64,learning_rate=0.1,seed=1']


def test_explicit_runs_combine_with_every_grid_point():
  assert _names(seeds=[3], runs=[{'model': 'lenet5'},
                                 {'model': 'resnet18', 'image_size': 64}],
                grid={'learning_rate': [0.1, 0.2]}) == [
      'learning_rate=0.1,model=lenet5,seed=3',
      'learning_rate=0.2,model=lenet5,seed=3',
      'image_size=64,learning_rate=0.1,model=resnet18,seed=3',
      'image_size=64,learning_rate=0.2,model=resnet18,seed=3']


def test_run_names_are_filesystem_safe():
  assert _names(seeds=[0], grid={'freeze': ['layer1/.*|bn'],
                                 'lr_boundaries_epochs': [(1.0, 2.0)]}) == [
      'freeze=layer1_.__bn,lr_boundaries_epochs=_1.0,_2.0_,seed=0']


def test_train_command_sets_overrides_seed_and_data_dir():
  config = sweep.parse_sweep(dict(base=BASE, seeds=[7],
                                  grid={'learning_rate': [0.05]},
                                  overrides={'num_steps': 20}))
  run, = sweep.expand(config)
  assert sweep.train_command(config, run, '/w/run', 'train.py', '/data') == [
      sys.executable, 'train.py', f'--config={BASE}', '--workdir=/w/run',
      '--config.num_steps=20', '--config.learning_rate=0.05',
      '--config.seed=7', '--config.data_dir=/data']


def test_shipped_quickstart_seeds_is_5_seeds_times_2_learning_rates(
    monkeypatch):
  monkeypatch.chdir(ROOT)
  config = sweep.load_sweep('configs/sweeps/quickstart_seeds.py')
  runs = sweep.expand(config)
  assert config.base == 'configs/quickstart.py'
  assert len(runs) == 10
  assert sorted({r.seed for r in runs}) == [0, 1, 2, 3, 4]
  assert sorted({r.overrides['learning_rate'] for r in runs}) == [0.05, 0.1]


@pytest.mark.parametrize('fields,message', [
    (dict(seed=[0]), "unknown field 'seed' in the sweep config (did you mean "
     'seeds?)'),
    (dict(seeds=[0], grid={'learnig_rate': [0.1]}),
     "unknown field 'learnig_rate' in grid of the sweep config: the base "
     'recipe has no such field (did you mean learning_rate?)'),
    (dict(seeds=[0], grid={'batch_size': [1.5]}), 'bad value for batch_size'),
    (dict(seeds=[0], overrides={'seed': 1}), 'seed set in overrides'),
    (dict(seeds=[0], grid={'learning_rate': [0.1]},
          overrides={'learning_rate': 0.2}),
     'learning_rate is set in both grid and overrides'),
    (dict(seeds=[0], runs=[{'freeze': 'a/b'}, {'freeze': 'a b'}]),
     'two runs would both be named freeze=a_b,seed=0'),
    (dict(seeds=[]), 'seeds in the sweep config must be a non-empty list'),
])
def test_bad_sweep_config_is_refused_naming_the_field(fields, message):
  with pytest.raises(sweep.SweepConfigError) as error:
    sweep.expand(sweep.parse_sweep(dict(base=BASE, **fields)))
  assert message in str(error.value)


def test_misspelt_field_is_one_line_error_before_any_run(tmp_path):
  config = _write_sweep(tmp_path / 'typo.py', base=BASE, seeds=[0],
                        grid={'learnig_rate': [0.1]})
  result = _sweep(f'--config={config}', f'--workdir={tmp_path / "sweep"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f"FATAL unknown field 'learnig_rate' in grid of {config}: the base "
      'recipe has no such field (did you mean learning_rate?).']
  assert not os.path.exists(tmp_path / 'sweep')


def test_missing_sweep_config_is_one_line_error(tmp_path):
  result = _sweep(f'--config={tmp_path}/none.py', f'--workdir={tmp_path}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'FATAL sweep config {tmp_path}/none.py not found.']


def test_workdir_holding_another_sweep_is_refused(tmp_path):
  workdir = tmp_path / 'sweep'
  sweep.check_workdir(str(workdir), sweep.parse_sweep(
      dict(base=BASE, seeds=[0, 1])))
  config = _write_sweep(tmp_path / 'more_seeds.py', base=BASE, seeds=[0, 1, 2])
  result = _sweep(f'--config={config}', f'--workdir={workdir}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'FATAL {workdir} holds a sweep with a different sweep config (seeds: '
      '[0, 1] -> [0, 1, 2]). Pass a new --workdir for this sweep.']
  assert os.listdir(workdir) == ['sweep.json']


def test_mean_std_uses_the_sample_standard_deviation():
  mean, std = sweep.mean_std([0.5, 0.7, 0.9])
  assert mean == pytest.approx(0.7)
  assert std == pytest.approx(0.2)  # sqrt((0.04 + 0 + 0.04) / (3 - 1))
  assert sweep.mean_std([0.8]) == (0.8, None)


def _fake_run(workdir, name, records, done=True):
  run_dir = os.path.join(workdir, name)
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, metrics.METRICS_FILE), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  if done:
    open(os.path.join(run_dir, sweep.DONE_FILE), 'w').close()


def test_summary_has_last_eval_per_run_and_mean_std_per_setting(tmp_path):
  config = sweep.parse_sweep(dict(base=BASE, seeds=[0, 1, 2, 3],
                                  grid={'learning_rate': [0.05, 0.1]}))
  runs = sweep.expand(config)
  accuracy = {'learning_rate=0.05': [0.5, 0.7, 0.9, None],
              'learning_rate=0.1': [0.8, None, None, None]}
  for run in runs:
    value = accuracy[run.setting][run.seed]
    # The last eval record counts, not an earlier one or a later train one.
    _fake_run(tmp_path, run.name, [
        {'step': 10, 'eval/accuracy': 0.1, 'eval/loss': 9.0},
        {'step': 20, 'eval/accuracy': value, 'eval/loss': 1.0},
        {'step': 20, 'train/loss': 5.0}], done=value is not None)
  results = sweep.collect_results(str(tmp_path), runs, {
      r.name: 1 for r in runs if accuracy[r.setting][r.seed] is None})
  sweep.write_summary(str(tmp_path), config, results)

  with open(tmp_path / 'summary.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['name'], r['status'], r['exit_code'], r['learning_rate'],
           r['seed'], r['step'], r['eval/accuracy']) for r in rows[:4]] == [
               ('learning_rate=0.05,seed=0', 'done', '0', '0.05', '0', '20',
                '0.5'),
               ('learning_rate=0.05,seed=1', 'done', '0', '0.05', '1', '20',
                '0.7'),
               ('learning_rate=0.05,seed=2', 'done', '0', '0.05', '2', '20',
                '0.9'),
               ('learning_rate=0.05,seed=3', 'failed', '1', '0.05', '3', '',
                '')]
  assert len(rows) == 8
  md = (tmp_path / 'summary.md').read_text().splitlines()
  assert '| learning_rate | seeds done | eval/accuracy | eval/loss |' in md
  assert '| 0.05 | 3/4 | 0.7000 ± 0.2000 | 1.0000 ± 0.0000 |' in md
  assert '| 0.1 | 1/4 | 0.8000 | 1.0000 |' in md
  assert '| learning_rate=0.05,seed=3 | failed (exit 1) | - | - |' in md
  assert md[-1] == '![Train and eval curves of every run](comparison.png)'
  with Image.open(tmp_path / 'comparison.png') as image:
    assert image.format == 'PNG'


def _last_eval(run_dir):
  return [r for r in metrics.read_metrics(run_dir) if 'eval/accuracy' in r][-1]


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_rerunning_a_sweep_retries_failed_and_interrupted_runs_only(
    data_dir, tmp_path):
  workdir = tmp_path / 'sweep'
  config = _write_sweep(tmp_path / 'small.py', base='configs/quickstart.py',
                        seeds=[0, 1], grid={'learning_rate': [0.05, 0.1]},
                        overrides=SHORT)
  args = (f'--config={config}', f'--workdir={workdir}', '--parallel=2',
          f'--data_dir={data_dir}')
  names = ['learning_rate=0.05,seed=0', 'learning_rate=0.05,seed=1',
           'learning_rate=0.1,seed=0', 'learning_rate=0.1,seed=1']
  # A leftover of another run in one workdir makes that run fail.
  failing, interrupted = workdir / names[0], workdir / names[3]
  os.makedirs(failing)
  (failing / 'config.json').write_text('{"model": "resnet50"}')

  first = _sweep(*args)
  assert first.returncode == 1, first.stderr[-3000:]
  assert first.stderr.strip().splitlines()[-1] == (
      f'FATAL 1 of 4 runs failed: {names[0]} (exit 1). See {workdir}/'
      'summary.md; rerun the same command to retry them.')
  assert (f'FAILED {names[0]}: exit 1: FATAL {failing} holds a run with a '
          'different config' in first.stderr)
  assert f'(log: {failing}/train.log)' in first.stderr
  assert sorted(p.name for p in workdir.iterdir() if p.is_dir()) == names
  rows = _read_csv(workdir / 'summary.csv')
  assert [(r['name'], r['status'], r['exit_code']) for r in rows] == [
      (names[0], 'failed', '1'), (names[1], 'done', '0'),
      (names[2], 'done', '0'), (names[3], 'done', '0')]
  assert rows[0]['eval/accuracy'] == ''
  for row in rows[1:]:
    assert float(row['eval/accuracy']) == _last_eval(
        workdir / row['name'])['eval/accuracy']

  # The user clears the leftover; another run dies after its step-10
  # checkpoint, before finishing.
  shutil.rmtree(failing)
  uninterrupted = (interrupted / 'metrics.jsonl').read_text()
  os.remove(interrupted / 'DONE')
  shutil.rmtree(interrupted / 'checkpoints' / '20')
  kept = [r for r in metrics.read_metrics(interrupted) if r['step'] <= 10]
  with open(interrupted / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)
  finished = {n: os.stat(workdir / n / 'metrics.jsonl').st_mtime_ns
              for n in names[1:3]}

  second = _sweep(*args)
  assert second.returncode == 0, second.stderr[-3000:]
  assert [n for n in names if f'skip {n}:' in second.stderr] == names[1:3]
  assert [n for n in names if f'start {n} ' in second.stderr] == [
      names[0], names[3]]
  assert finished == {n: os.stat(workdir / n / 'metrics.jsonl').st_mtime_ns
                      for n in names[1:3]}
  log = (interrupted / 'train.log').read_text()
  assert log.count('==== ') == 2  # Appended to, not overwritten.
  assert 'Resuming from the checkpoint at step 10.' in log
  assert (interrupted / 'metrics.jsonl').read_text() == uninterrupted

  rows = _read_csv(workdir / 'summary.csv')
  assert [(r['status'], r['learning_rate'], r['seed']) for r in rows] == [
      ('done', '0.05', '0'), ('done', '0.05', '1'), ('done', '0.1', '0'),
      ('done', '0.1', '1')]
  for row in rows:
    assert float(row['eval/accuracy']) == _last_eval(
        workdir / row['name'])['eval/accuracy']
  md = (workdir / 'summary.md').read_text()
  for lr, pair in (('0.05', rows[:2]), ('0.1', rows[2:])):
    cells = [f'{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}' for v in (
        [float(r[k]) for r in pair]
        for k in ('eval/accuracy', 'eval/loss', 'eval/top5'))]
    assert f'| {lr} | 2/2 | {" | ".join(cells)} |' in md.splitlines()

  csv_text = (workdir / 'summary.csv').read_text()
  third = _sweep(*args)
  assert third.returncode == 0, third.stderr[-3000:]
  assert [n for n in names if f'skip {n}:' in third.stderr] == names
  assert 'start ' not in third.stderr
  assert (workdir / 'summary.csv').read_text() == csv_text
  assert (workdir / 'summary.md').read_text() == md
