"""The task seam: a task that is not classification (regressing a digit's
brightness) trained by the same loop, with resume and non-finite handling."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from jaxcnn import checkpoint
from jaxcnn import metrics
from jaxcnn import tasks
from jaxcnn import trainer
from jaxcnn.data import datasets
from jaxcnn.data import stream
from tests import resume

SIZE = 16


class _Regressor(nn.Module):
  """Conv -> BatchNorm -> mean pool -> one output: linear, as the target is."""
  in_channels: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.8)(x)
    return nn.Dense(1)(x.mean(axis=(1, 2)))[:, 0]


def _brightness(image: tf.Tensor) -> tf.Tensor:
  """The mean pixel value (about 0.3 +- 0.03 on digits), standardised."""
  return (tf.reduce_mean(image) - 0.3) / 0.03


class _SquaredErrors(tasks.Evaluator):

  def __init__(self):
    self.sums = []

  def add(self, outputs):
    self.sums.append(jax.device_get(outputs))  # On the host, as COCO's does.

  def result(self):
    total = {k: sum(float(s[k]) for s in self.sums) for k in self.sums[0]}
    return {'mse': total['squared_error'] / total['count']}


class Brightness(tasks.Task):
  """Regresses the mean pixel value (0..1) of a randomly flipped digit."""

  def model(self, defaults: dict[str, Any]) -> nn.Module:
    return _Regressor()

  def _image(self, example):
    image = tf.image.resize(tf.cast(example['image'], tf.float32) / 255.0,
                            [SIZE, SIZE])
    return image

  def _train(self, seed, example):
    image = tf.image.stateless_random_flip_left_right(self._image(example),
                                                      seed)
    return {'image': image, 'target': _brightness(image)}

  def _eval(self, example):
    image = self._image(example)
    return {'image': image, 'target': _brightness(image)}

  def input_pipeline(self, model, process_index, process_count):
    config = self.config
    builder = datasets.load_builder('digits', config.data_dir)
    return stream.Stream(builder, 'train', 'test', config.batch_size,
                         config.eval_batch_size, self._train, self._eval,
                         seed=config.seed, process_index=process_index,
                         process_count=process_count)

  def loss(self, outputs, batch, intermediates):
    loss = jnp.mean(jnp.square(outputs - batch['target']))
    return loss, {'loss': loss}

  def eval_outputs(self, outputs, batch):
    errors = jnp.square(outputs - batch['target']) * batch['mask']
    return {'squared_error': jnp.sum(errors), 'count': jnp.sum(batch['mask'])}

  def evaluator(self):
    return _SquaredErrors()

  def metadata(self, model, data):
    return {'target': 'mean pixel value', 'image_size': SIZE}

  def dummy_batch(self, model, batch_size, image_size):
    return {'image': np.zeros((batch_size, image_size, image_size, 1),
                              np.float32),
            'target': np.zeros(batch_size, np.float32)}


tasks.register('brightness', Brightness)


@pytest.fixture
def config(digits_config):
  digits_config.update(dict(
      task='brightness', num_steps=20, log_every_steps=5,
      checkpoint_every_steps=10, eval_every_steps=20, batch_size=32,
      optimizer='adamw', warmup_epochs=0.0, learning_rate=0.05,
      weight_decay=0.0))
  return digits_config


def _eval_targets(config) -> np.ndarray:
  data = Brightness(config).input_pipeline(_Regressor(), 0, 1)
  return np.concatenate([b['target'][b['mask'] > 0]
                         for b in data.eval_batches()])


def test_a_second_task_trains_resumes_bitwise_and_records_itself(
    config, tmp_path):
  straight = str(tmp_path / 'straight')
  final = trainer.train_and_evaluate(config, straight)
  records = metrics.read_metrics(straight)
  losses = [r['train/loss'] for r in records if 'train/loss' in r]
  assert losses[-1] < 0.5 * losses[0]
  assert set(records[-1]) == {'step', 'eval/mse'}
  targets = _eval_targets(config)
  # Better than the best constant, the targets' variance.
  assert final['eval/mse'] < 0.5 * float(np.var(targets))
  meta = checkpoint.load_meta(straight)
  assert (meta['task'], meta['target']) == ('brightness', 'mean pixel value')

  # Killed after the checkpoint at step 10, while writing step 15's line.
  resume.assert_resumes_bitwise(config, straight, str(tmp_path / 'resumed'),
                                final, later_checkpoint=20, kept_lines=2)


def test_a_second_task_halts_or_skips_non_finite_steps(config, tmp_path):
  config.update(dict(learning_rate=1e30, num_steps=6, log_every_steps=3,
                     checkpoint_every_steps=3, eval_every_steps=6))
  with pytest.raises(FloatingPointError, match='Non-finite loss or gradient '
                     'at step 2'):
    trainer.train_and_evaluate(config, str(tmp_path / 'halt'))
  config.on_nonfinite = 'skip'
  trainer.train_and_evaluate(config, str(tmp_path / 'skip'))
  skipped = [r['train/skipped_steps']
             for r in metrics.read_metrics(str(tmp_path / 'skip'))
             if 'train/skipped_steps' in r]
  assert skipped[-1] == 3
  params = checkpoint.load_variables(str(tmp_path / 'skip'))[0]['params']
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))
