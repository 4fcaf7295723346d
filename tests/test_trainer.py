"""End to end: train, resume bitwise, initialise from a checkpoint."""

import hashlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import efficientnet_b0
from configs import quickstart
from jaxcnn import checkpoint
from jaxcnn import metrics
from jaxcnn import models
from jaxcnn import predict
from jaxcnn import state as state_lib
from jaxcnn import trainer
from jaxcnn import workdir as workdir_lib

pytestmark = pytest.mark.cost_seconds(285)


def _leaves(tree):
  return jax.tree.leaves(tree)


def _final_params(workdir):
  variables, meta = checkpoint.load_variables(workdir)
  return variables['params'], meta


def test_short_run_writes_metrics_config_checkpoints_and_learns(
    digits_config, tmp_path):
  digits_config.num_steps = 40
  digits_config.checkpoint_every_steps = 20
  workdir = str(tmp_path / 'run')
  final = trainer.train_and_evaluate(digits_config, workdir)
  records = metrics.read_metrics(workdir)
  train = [r for r in records if 'train/loss' in r]
  assert [r['step'] for r in train] == list(range(5, 45, 5))
  assert train[-1]['train/loss'] < 0.7 * train[0]['train/loss']
  assert records[-1] == {'step': 40, **final}
  assert set(final) == {'eval/loss', 'eval/accuracy', 'eval/top5'}
  assert final['eval/accuracy'] > 0.5
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model'] == 'lenet5'
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['20', '40']
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  _, meta = _final_params(workdir)
  assert meta['step'] == 40 and meta['model'] == 'lenet5'


def test_half_precision_trains_in_bfloat16_with_float32_parameters(
    digits_config, tmp_path):
  digits_config.num_steps = 40
  digits_config.half_precision = True
  workdir = str(tmp_path / 'bf16')
  trainer.train_and_evaluate(digits_config, workdir)
  losses = [r['train/loss'] for r in metrics.read_metrics(workdir)
            if 'train/loss' in r]
  assert losses[-1] < 0.7 * losses[0]
  params, _ = _final_params(workdir)
  assert {str(p.dtype) for p in _leaves(params)} == {'float32'}
  assert models.from_config(digits_config, 10).dtype == jnp.bfloat16


def test_restart_after_interruption_continues_bitwise(digits_config, tmp_path):
  digits_config.num_steps = 12
  digits_config.checkpoint_every_steps = 6
  digits_config.ema_decay = 0.9
  straight, interrupted = str(tmp_path / 'a'), str(tmp_path / 'b')
  trainer.train_and_evaluate(digits_config, straight)
  trainer.train_and_evaluate(digits_config, interrupted)
  # As if the process died after the step-6 checkpoint: the step-12
  # checkpoint never happened and later metrics were half written.
  shutil.rmtree(os.path.join(interrupted, 'checkpoints', '12'))
  with open(os.path.join(interrupted, 'metrics.jsonl'), 'a') as f:
    f.write(json.dumps({'step': 11, 'train/loss': 123.0}) + '\n')
  trainer.train_and_evaluate(digits_config, interrupted)

  a, _ = _final_params(straight)
  b, _ = _final_params(interrupted)
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert metrics.read_metrics(straight) == metrics.read_metrics(interrupted)


def test_init_from_starts_from_trained_weights(digits_config, tmp_path):
  digits_config.num_steps = 120
  pretrained = str(tmp_path / 'pretrained')
  trainer.train_and_evaluate(digits_config, pretrained)

  digits_config.num_steps = 5
  digits_config.init_from = pretrained
  finetuned = str(tmp_path / 'finetuned')
  trainer.train_and_evaluate(digits_config, finetuned)
  digits_config.init_from = None
  fresh = str(tmp_path / 'fresh')
  trainer.train_and_evaluate(digits_config, fresh)

  def first_loss(workdir):
    return metrics.read_metrics(workdir)[0]['train/loss']
  assert first_loss(finetuned) < 0.5 * first_loss(fresh)


def test_init_from_reinitialises_a_head_of_another_class_count(
    digits_config, tmp_path):
  digits_config.num_steps = 5
  pretrained = str(tmp_path / 'pretrained')
  trainer.train_and_evaluate(digits_config, pretrained)
  loaded, _ = checkpoint.load_variables(pretrained)

  model = models.from_config(digits_config, num_classes=12)
  fresh = jax.device_get(state_lib.initial_variables(
      model, jax.random.PRNGKey(3), (32, 32, 1)))
  merged = checkpoint.merge_pretrained(fresh, loaded)
  assert merged['params']['head']['kernel'].shape == (84, 12)
  np.testing.assert_array_equal(merged['params']['head']['kernel'],
                                fresh['params']['head']['kernel'])
  conv = [k for k in merged['params'] if k != 'head'][0]
  np.testing.assert_array_equal(merged['params'][conv]['kernel'],
                                loaded['params'][conv]['kernel'])

  broken = jax.tree.map(lambda x: x, loaded)
  del broken['params'][conv]
  broken['params']['extra'] = {'kernel': np.zeros(3)}
  with pytest.raises(ValueError, match=f'missing params/{conv}/kernel'
                     r'(.|\n)*unexpected params/extra/kernel'):
    checkpoint.merge_pretrained(fresh, broken)


def test_workdir_of_another_run_is_refused(digits_config, tmp_path):
  digits_config.num_steps = 2
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(digits_config, workdir)
  before = open(os.path.join(workdir, 'config.json')).read()
  digits_config.learning_rate = 0.5
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match=r'learning_rate: 0.1 -> 0.5(.|\n)*new --workdir'):
    trainer.train_and_evaluate(digits_config, workdir)
  assert open(os.path.join(workdir, 'config.json')).read() == before


def test_efficientnet_b0_recipe_learns_on_mock_imagenet(tmp_path):
  """The recipe's optimizer, schedule, EMA and label smoothing, on B0's
  block table at a quarter of its depth (one block per stage: compiling the
  whole network is most of the time and proves nothing more here)."""
  config = efficientnet_b0.get_config()
  with config.unlocked():
    config.model_kwargs.depth = 0.25
  config.update(dict(
      dataset='imagenet2012', image_size=32, batch_size=8, eval_batch_size=8,
      num_steps=30, warmup_steps=0, log_every_steps=5, eval_every_steps=30,
      train_crop='resize',
      random_flip=False, augment='none', learning_rate=0.01, lr_batch_size=0,
      ema_decay=0.9, progress_bar=False))
  with tfds.testing.mock_data(num_examples=8):
    final = trainer.train_and_evaluate(config, str(tmp_path))
  records = metrics.read_metrics(str(tmp_path))
  losses = [r['train/loss'] for r in records if 'train/loss' in r]
  assert len(losses) == 6
  assert losses[-1] < 0.5 * losses[0]
  assert {'eval/accuracy', 'eval_ema/accuracy'} <= set(final)
  assert final['eval/loss'] != final['eval_ema/loss']


def test_workdir_saved_before_a_field_existed_resumes(digits_config,
                                                      tmp_path):
  digits_config.num_steps = 2
  workdir = str(tmp_path / 'run')
  first = trainer.train_and_evaluate(digits_config, workdir)
  path = os.path.join(workdir, 'config.json')
  saved = json.load(open(path))
  del saved['data_shards']  # As written before the field existed.
  with open(path, 'w') as f:
    json.dump(saved, f)
  # Accepted (the run is already finished, so left as it is) instead of
  # refused.
  assert trainer.train_and_evaluate(digits_config, workdir) == first
  assert json.load(open(path)) == saved


FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures',
                       'workdir_before_task_seam')


def _parameters_sha256(workdir: str) -> str:
  variables, _ = checkpoint.load_variables(workdir)
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def test_a_workdir_from_before_the_task_seam_resumes_as_it_would_have(
    data_dir, tmp_path):
  """The fixture is a quickstart run of 10 steps that the version before
  tasks (commit 4a51087's trainer) wrote and that stopped after its
  checkpoint at step 5; beside it, the metrics.jsonl of that version's
  uninterrupted run. Equal to float32 rounding, not bitwise: XLA's CPU code
  (its vector width) differs between the machine that recorded it and this
  one, by an ulp here and there; another batch or key would move the loss
  by far more."""
  workdir = str(tmp_path / 'old')
  shutil.copytree(FIXTURE, workdir)
  config = quickstart.get_config()
  config.update(dict(data_dir=data_dir, num_steps=10, log_every_steps=5,
                     checkpoint_every_steps=5, eval_every_steps=10,
                     progress_bar=False))
  trainer.train_and_evaluate(config, workdir)
  with open(f'{FIXTURE}.expected_metrics.jsonl') as f:
    expected = [json.loads(line) for line in f]
  got = metrics.read_metrics(workdir)
  assert [sorted(r) for r in got] == [sorted(r) for r in expected]
  for record, want in zip(got, expected):
    np.testing.assert_allclose([record[k] for k in sorted(want)],
                               [want[k] for k in sorted(want)], rtol=1e-6)


def test_a_fine_tune_resumes_and_predicts_after_its_weights_are_deleted(
    digits_config, tmp_path):
  digits_config.num_steps = 4
  pretrained = str(tmp_path / 'pretrained')
  trainer.train_and_evaluate(digits_config, pretrained)
  digits_config.update(dict(init_from=pretrained, num_steps=10,
                            checkpoint_every_steps=5, eval_every_steps=10))
  straight = str(tmp_path / 'straight')
  final = trainer.train_and_evaluate(digits_config, straight)
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '10'))
  shutil.rmtree(pretrained)
  assert trainer.train_and_evaluate(digits_config, resumed) == final
  assert _parameters_sha256(resumed) == _parameters_sha256(straight)
  predictor = predict.load(resumed)
  assert predictor.class_names == [str(i) for i in range(10)]
  assert predictor.preprocessing.image_size == digits_config.image_size


def test_a_run_records_its_lowering_and_writes_its_model_summary(
    digits_config, tmp_path):
  digits_config.num_steps = 3
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(digits_config, workdir)
  # The quickstart's choices, resolved for this CPU: every 'auto' the
  # fastest measured here.
  resolved = {'depthwise': 'taps', 'pointwise': 'matmul',
              'small_output_conv': 'conv', 'max_pool_backward': 'taps'}
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['lowering'] == resolved
  assert _final_params(workdir)[1]['lowering'] == resolved
  summary = os.path.join(workdir, 'model_summary.txt')
  with open(summary) as f:
    text = f.read()
  assert text.startswith('lenet5: input (1, 32, 32, 1), output (1, 10)')
  assert 'parameters: 61,706\n' in text and 'MACs: 416.5 K' in text
  os.remove(summary)
  trainer.train_and_evaluate(digits_config, workdir)  # Complete: no summary.
  assert not os.path.exists(summary)
