"""Schedules, weight-decay masks and the TF-style RMSProp update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from jaxcnn import optim


def _config(**fields):
  config = base.get_config()
  config.update(dict(batch_size=256, learning_rate=0.1, num_epochs=10.0,
                     warmup_epochs=1.0))
  config.update(fields)
  return config


def test_learning_rate_scales_with_the_batch():
  assert optim.peak_learning_rate(_config(batch_size=1024)) == pytest.approx(0.4)
  assert optim.peak_learning_rate(_config(batch_size=1024, lr_batch_size=0)
                                  ) == pytest.approx(0.1)


def test_durations_in_steps_override_epochs():
  config = _config(num_epochs=2.5)
  assert optim.to_steps(config, 'num', 100) == 250
  config.num_steps = 7
  assert optim.to_steps(config, 'num', 100) == 7


def test_warmup_then_cosine():
  lr = optim.learning_rate_schedule(_config(), steps_per_epoch=100)
  assert float(lr(0)) == 0.0
  assert float(lr(50)) == pytest.approx(0.05)
  assert float(lr(100)) == pytest.approx(0.1)
  assert float(lr(550)) == pytest.approx(0.05, rel=1e-5)  # Half-way.
  assert float(lr(1000)) == pytest.approx(0.0, abs=1e-7)


def test_exponential_staircase_counts_from_step_zero():
  lr = optim.learning_rate_schedule(
      _config(schedule='exponential', lr_decay_rate=0.97, lr_decay_epochs=2.4),
      steps_per_epoch=10)
  assert float(lr(23)) == pytest.approx(0.1)
  assert float(lr(24)) == pytest.approx(0.097)
  assert float(lr(49)) == pytest.approx(0.1 * 0.97**2)


def test_multistep_boundaries_in_epochs():
  lr = optim.learning_rate_schedule(
      _config(schedule='multistep', warmup_epochs=0.0, lr_decay_rate=0.1,
              lr_boundaries_epochs=(3.0, 6.0)), steps_per_epoch=10)
  assert [float(lr(s)) for s in (0, 29, 30, 59, 60)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001])


def test_weight_decay_skips_biases_and_batchnorm():
  params = {'conv': {'kernel': jnp.ones((3, 3, 1, 2)), 'bias': jnp.ones(2)},
            'bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  assert optim.decay_mask(params) == {
      'conv': {'kernel': True, 'bias': False},
      'bn': {'scale': False, 'bias': False}}


def test_tf_rmsprop_matches_a_hand_computed_step():
  lr, decay, eps, momentum = 0.1, 0.9, 1e-3, 0.9
  tx = optim.tf_rmsprop(lr, decay, eps, momentum)
  params = jnp.array([1.0, -2.0])
  grads = jnp.array([0.5, 3.0])
  state = tx.init(params)
  ms = np.ones(2)  # TF starts the square average at 1.
  mom = np.zeros(2)
  p = np.array(params)
  for _ in range(2):
    ms = decay * ms + (1 - decay) * np.square(grads)
    mom = momentum * mom + lr * grads / np.sqrt(ms + eps)
    p = p - mom
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params, p, rtol=1e-6)


@pytest.mark.parametrize('name', optim.OPTIMIZERS)
@pytest.mark.parametrize('mode', ['l2', 'decoupled'])
def test_every_optimizer_reduces_a_quadratic(name, mode):
  config = _config(optimizer=name, weight_decay_mode=mode, grad_clip_norm=1.0,
                   learning_rate=0.05, lr_batch_size=0, warmup_epochs=0.0)
  tx = optim.create_optimizer(config, optim.learning_rate_schedule(config, 10))
  params = {'w': jnp.full((2, 2), 3.0)}
  state = tx.init(params)
  for _ in range(20):
    grads = {'w': 2 * params['w']}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert float(jnp.abs(params['w']).max()) < 3.0


def test_unknown_optimizer_and_schedule_are_named():
  with pytest.raises(ValueError, match='optimizer.*sgd, rmsprop, adamw'):
    optim.create_optimizer(_config(optimizer='lamb'), optax.constant_schedule(1))
  with pytest.raises(ValueError, match='schedule.*cosine'):
    optim.learning_rate_schedule(_config(schedule='linear'), 10)


def test_freeze_keeps_matching_parameters_fixed():
  params = {'conv1': {'kernel': jnp.ones((3, 3, 1, 2))},
            'layer1_0': {'bn1': {'scale': jnp.ones(2)}},
            'head': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)}}
  config = _config(freeze=r'^(conv1|layer1_)', warmup_epochs=0.0)
  tx = optim.create_optimizer(config, optim.learning_rate_schedule(config, 10))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new['conv1']['kernel'], params['conv1']['kernel'])
  np.testing.assert_array_equal(new['layer1_0']['bn1']['scale'], 1.0)
  assert float(new['head']['kernel'][0, 0]) < 1.0
