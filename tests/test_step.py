"""The pure train and eval steps."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import quickstart
from jaxcnn import models
from jaxcnn import sharding
from jaxcnn import state as state_lib
from jaxcnn import step as step_lib
from jaxcnn import tasks
from jaxcnn.tasks import classification


def _task(**fields):
  config = quickstart.get_config()
  config.update(dict(label_smoothing=0.0, **fields))
  return tasks.create(config)


def _state(ema: bool, model_name: str = 'lenet5', shape=(32, 32, 1)):
  model = models.create(model_name, num_classes=10)
  variables = state_lib.initial_variables(model, jax.random.PRNGKey(0), shape)
  return state_lib.create(model, optax.sgd(0.05, 0.9), variables, ema)


def _batch(n=32, shape=(32, 32, 1)):
  """Noisy copies of one random template per class: a learnable task."""
  rng = np.random.RandomState(0)
  templates = rng.normal(size=(10, *shape))
  labels = rng.randint(0, 10, size=n)
  images = templates[labels] + 0.5 * rng.normal(size=(n, *shape))
  return {'image': images.astype(np.float32),
          'label': labels.astype(np.int32),
          'mask': np.ones(n, np.float32)}


def _train_step(ema_decay=0.0, l2_weight=0.0, skip_nonfinite=False):
  return jax.jit(functools.partial(
      step_lib.train_step, loss_fn=_task().loss, rng=jax.random.PRNGKey(1),
      learning_rate_fn=optax.constant_schedule(0.05), l2_weight=l2_weight,
      ema_decay=ema_decay, skip_nonfinite=skip_nonfinite))


def _eval(state, batch, use_ema=False):
  return step_lib.eval_step(state.variables(use_ema), batch,
                            apply_fn=state.apply_fn,
                            eval_outputs=_task().eval_outputs)


def test_cross_entropy_with_label_smoothing_matches_formula():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  logp = jax.nn.log_softmax(logits)[0]
  expected = -(0.9 + 0.1 / 3) * logp[0] - (0.1 / 3) * (logp[1] + logp[2])
  got = classification.cross_entropy(logits, jnp.array([0]),
                                     label_smoothing=0.1)
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_l2_penalty_counts_only_kernels():
  params = {'dense': {'kernel': jnp.full((2, 2), 2.0), 'bias': jnp.ones(2)},
            'bn': {'scale': jnp.full(3, 5.0)}}
  assert float(step_lib.l2_penalty(params)) == pytest.approx(0.5 * 16.0)


def test_train_steps_reduce_the_loss_on_a_fixed_batch():
  state, batch = _state(ema=False), _batch()
  train_step = _train_step()
  losses = []
  for _ in range(30):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.1 * losses[0]
  assert int(state.step) == 30


def test_ema_trails_the_weights_and_is_what_ema_eval_uses():
  state, batch = _state(ema=True), _batch()
  train_step = _train_step(ema_decay=0.9)
  for _ in range(5):
    state, _ = train_step(state, batch)
  raw = state.params['head']['kernel']
  ema = state.ema['params']['head']['kernel']
  assert not np.allclose(raw, ema)
  eval_raw = _eval(state, batch)
  eval_ema = _eval(state, batch, use_ema=True)
  assert float(eval_raw['loss']) != float(eval_ema['loss'])
  ema_only = state.replace(params=state.ema['params'])
  np.testing.assert_allclose(
      _eval(ema_only, batch)['loss'], eval_ema['loss'], rtol=1e-6)


def test_eval_step_ignores_padding():
  state, batch = _state(ema=False), _batch(8)
  full = _eval(state, batch)
  batch['mask'][4:] = 0.0
  batch['label'][4:] = 0
  half = _eval(state, batch)
  first = _eval(state, {k: v[:4] for k, v in batch.items()})
  assert float(full['count']) == 8 and float(half['count']) == 4
  for key in ('loss', 'accuracy', 'top5'):
    np.testing.assert_allclose(half[key], first[key], rtol=1e-5)


@pytest.mark.parametrize('skip', [False, True])
def test_nonfinite_step_is_flagged_and_skipped_when_asked(skip):
  state, batch = _state(ema=True), _batch()
  train_step = _train_step(ema_decay=0.9, skip_nonfinite=skip)
  state, metrics = train_step(state, batch)
  assert float(metrics['finite']) == 1.0
  before = jax.device_get(state)
  poisoned = dict(batch, image=batch['image'].copy())
  poisoned['image'][3, 0, 0, 0] = np.nan
  state, metrics = train_step(state, poisoned)
  assert float(metrics['finite']) == 0.0
  assert int(state.step) == 2
  if skip:
    # Weights, BatchNorm statistics, optimizer state and EMA.
    for new, old in zip(jax.tree.leaves(state.replace(step=0)),
                        jax.tree.leaves(before.replace(step=0)), strict=True):
      np.testing.assert_array_equal(new, old)
    state, metrics = train_step(state, batch)
    assert float(metrics['finite']) == 1.0
    assert not np.array_equal(state.params['head']['kernel'],
                              before.params['head']['kernel'])
  else:
    assert any(np.isnan(p).any() for p in jax.tree.leaves(state.params))


class _AuxNet(nn.Module):
  """A head and a sown auxiliary head whose logits are scaled by the
  training progress: what the loop must do for NASNet's aux head and its
  drop-path ramp, without NASNet's compile."""
  in_channels: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False, progress: float = 0.0):
    features = images.mean(axis=(1, 2))
    aux = progress * nn.Dense(10, name='aux')(features)
    if train:
      self.sow('intermediates', 'aux_logits', aux)
    return nn.Dense(10, name='head')(features)


def test_the_run_step_adds_the_weighted_aux_loss_and_passes_progress():
  config = quickstart.get_config()
  config.update(dict(label_smoothing=0.0, weight_decay=0.0,
                     aux_loss_weight=0.4))
  task, model, lr, total_steps = tasks.create(config), _AuxNet(), 0.5, 4
  state = state_lib.create(model, optax.sgd(lr), state_lib.initial_variables(
      model, jax.random.PRNGKey(0), (8, 8, 1)), False)
  mesh = sharding.create_mesh()
  step = step_lib.make_train_step(
      config, task, model, optax.constant_schedule(lr), mesh,
      sharding.state_shardings(mesh, state), total_steps)
  batch = {k: v for k, v in _batch(16, (8, 8, 1)).items() if k != 'mask'}
  features = batch['image'].mean(axis=(1, 2))

  def expected_loss(params, progress):
    def ce(logits):
      return jnp.mean(classification.cross_entropy(logits, batch['label']))
    head, aux = params['head'], params['aux']
    return (ce(features @ head['kernel'] + head['bias']),
            ce(progress * (features @ aux['kernel'] + aux['bias'])))

  for step_index in range(2):
    progress = step_index / total_steps
    params = jax.device_get(state.params)  # The step donates the state.
    main, aux = expected_loss(params, progress)
    grads = jax.grad(lambda p: sum(
        w * l for w, l in zip((1.0, 0.4), expected_loss(p, progress))))(
            params)
    state, metrics = step(state, batch)
    np.testing.assert_allclose(metrics['loss'], main, rtol=1e-6)
    np.testing.assert_allclose(metrics['aux_loss'], aux, rtol=1e-6)
    jax.tree.map(
        lambda new, old, g: np.testing.assert_allclose(
            new, old - lr * g, rtol=1e-5, atol=1e-7),
        jax.device_get(state.params), params, grads)
