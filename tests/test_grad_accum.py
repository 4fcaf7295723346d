"""Gradient accumulation: one step as k microbatches in sequence."""

import os
import subprocess
import sys
import textwrap
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import quickstart
from jaxcnn import config_check
from jaxcnn import state as state_lib
from jaxcnn import step as step_lib
from jaxcnn import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOMENTUM = 0.8


class _ConvNet(nn.Module):
  """Conv -> ReLU -> mean pool -> logits (`batch_norm`: BatchNorm on the
  input first)."""
  batch_norm: bool = False
  in_channels: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM)(x)
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(10)(x.mean(axis=(1, 2)))


def _task(**fields):
  config = quickstart.get_config()
  config.update({'label_smoothing': 0.1, **fields})
  return tasks.create(config)


def _batch(n=12):
  rng = np.random.RandomState(0)
  return {'image': (rng.normal(size=(n, 6, 6, 2)) * 2 + 1).astype(np.float32),
          'label': rng.randint(0, 10, size=n).astype(np.int32)}


def _state(model, tx):
  variables = state_lib.initial_variables(model, jax.random.PRNGKey(0),
                                          (6, 6, 2))
  return state_lib.create(model, tx, variables, False)


def _step(task, grad_accum_steps, lr, l2_weight=0.0):
  return jax.jit(lambda state, batch: step_lib.train_step(
      state, batch, loss_fn=task.loss, rng=jax.random.PRNGKey(1),
      learning_rate_fn=optax.constant_schedule(lr), l2_weight=l2_weight,
      ema_decay=0.0, batch_fn=task.train_batch,
      grad_accum_steps=grad_accum_steps))


def test_microbatch_j_holds_every_kth_example_from_j():
  parts = step_lib.microbatches({'x': np.arange(12), 'y': np.ones((12, 2))}, 3)
  np.testing.assert_array_equal(parts['x'], [[0, 3, 6, 9], [1, 4, 7, 10],
                                             [2, 5, 8, 11]])
  assert parts['y'].shape == (3, 4, 2)


def test_without_batch_norm_k_microbatches_make_the_update_of_one_batch():
  # Mixup on and L2 in the loss: the batch is mixed whole, then split.
  task = _task(mixup_alpha=1.0, cutmix_alpha=1.0)
  batch = _batch()
  results = []
  for k in (1, 4):
    state = _state(_ConvNet(), optax.sgd(0.1, 0.9))
    step = _step(task, k, lr=0.1, l2_weight=1e-3)
    for _ in range(2):
      state, metrics = step(state, batch)
    results.append((state, metrics))
  (one, one_metrics), (four, four_metrics) = results
  assert int(four.step) == 2
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert set(one_metrics) == set(four_metrics)
  for key in ('loss', 'accuracy', 'grad_norm'):
    np.testing.assert_allclose(one_metrics[key], four_metrics[key], rtol=1e-5)
  moved = np.abs(one.params['Dense_0']['kernel'] -
                 _state(_ConvNet(), optax.sgd(0.1)).params['Dense_0'][
                     'kernel']).max()
  assert moved > 1e-3


def test_with_batch_norm_each_microbatch_is_normalised_and_counted_alone():
  task, batch, lr, k = _task(label_smoothing=0.0), _batch(), 0.1, 3
  model = _ConvNet(batch_norm=True)
  start = _state(model, optax.sgd(lr))
  state, metrics = _step(task, k, lr=lr)(start, batch)

  # By hand: microbatch j is examples j, j + 3, ...; BatchNorm's running
  # averages take one momentum update per microbatch, in order, with its
  # (biased) statistics.
  mean, var = np.zeros(2), np.ones(2)
  grads, losses = [], []
  for j in range(k):
    images = batch['image'][j::k]
    mean = MOMENTUM * mean + (1 - MOMENTUM) * images.mean(axis=(0, 1, 2))
    var = MOMENTUM * var + (1 - MOMENTUM) * images.var(axis=(0, 1, 2))

    def loss(params, images=images, labels=batch['label'][j::k]):
      logits, _ = model.apply(
          {'params': params, 'batch_stats': start.batch_stats}, images,
          train=True, mutable=['batch_stats'])
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits, labels))
    value, grad = jax.value_and_grad(loss)(start.params)
    losses.append(float(value))
    grads.append(grad)
  stats = state.batch_stats['BatchNorm_0']
  np.testing.assert_allclose(stats['mean'], mean, rtol=1e-5)
  np.testing.assert_allclose(stats['var'], var, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], np.mean(losses), rtol=1e-5)
  expected = jax.tree.map(lambda p, *g: p - lr * np.mean(g, axis=0),
                          start.params, *grads)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # One batch instead: a single update with the whole batch's statistics.
  whole, _ = _step(task, 1, lr=lr)(start, batch)
  np.testing.assert_allclose(whole.batch_stats['BatchNorm_0']['mean'],
                             (1 - MOMENTUM) * batch['image'].mean((0, 1, 2)),
                             rtol=1e-5)
  assert not np.allclose(whole.batch_stats['BatchNorm_0']['mean'], mean)


def test_the_step_holds_the_activations_of_one_microbatch_at_a_time():
  # Compiled only. 4.2 MB of temporaries for 64 images, 1.6 MB as 4 x 16.
  task, model = _task(), _ConvNet(batch_norm=True)
  state = jax.eval_shape(lambda: _state(model, optax.sgd(0.1)))
  batch = {'image': jax.ShapeDtypeStruct((64, 32, 32, 2), jnp.float32),
           'label': jax.ShapeDtypeStruct((64,), jnp.int32)}
  one, four = (_step(task, k, lr=0.1).lower(state, batch).compile()
               .memory_analysis().temp_size_in_bytes for k in (1, 4))
  assert four < 0.5 * one, (one, four)


def test_each_microbatch_must_divide_among_the_devices():
  config = dict(quickstart.get_config().to_dict(), grad_accum_steps=4)
  assert config['batch_size'] == 64
  assert config_check.problems(config, 32, 4) == [
      '--config.grad_accum_steps=4: must leave microbatches (--config.'
      'batch_size=64 / 4 = 16) divisible by the device count (32)']
  assert config_check.problems(config, 16, 2) == []
  # A batch that does not divide among the devices is said once, as before.
  assert config_check.problems(config, 128, 1) == [
      '--config.batch_size=64: must be divisible by the device count (128)']


_SHARDED = textwrap.dedent('''
    import sys
    import jax, numpy as np, optax
    from jaxcnn import sharding
    from tests import test_grad_accum as t

    assert jax.device_count() == 4, jax.devices()
    task, model = t._task(), t._ConvNet(batch_norm=True)
    batch = t._batch(16)

    def run(devices):
      mesh = sharding.create_mesh(devices)
      state = t._state(model, optax.sgd(0.1, 0.9))
      state_sharding = sharding.state_shardings(mesh, state)
      step = jax.jit(t._step(task, 2, lr=0.1),
                     in_shardings=(state_sharding,
                                   sharding.batch_sharding(mesh)))
      data = sharding.global_batch(batch, sharding.batch_sharding(mesh))
      state = jax.device_put(state, state_sharding)
      hlo = step.lower(state, data).compile().as_text()
      state, metrics = step(state, data)
      return jax.device_get((state.params, state.batch_stats, metrics)), hlo

    one, _ = run(jax.devices()[:1])
    four, hlo = run(jax.devices())
    np.savez(sys.argv[1], *jax.tree.leaves(one), *jax.tree.leaves(four))
    print(len(jax.tree.leaves(one)), 'all-gather' in hlo, 'all-to-all' in hlo)
''')


def test_on_four_devices_the_microbatches_stay_split_and_match_one_device(
    tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  out = tmp_path / 'leaves.npz'
  result = subprocess.run([sys.executable, '-c', _SHARDED, str(out)], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  count, gathers, all_to_all = result.stdout.split()[-3:]
  # Each device keeps its share of every microbatch: nothing is regathered.
  assert (gathers, all_to_all) == ('False', 'False')
  arrays = np.load(out)
  leaves = [arrays[f'arr_{i}'] for i in range(2 * int(count))]
  one, four = leaves[:int(count)], leaves[int(count):]
  assert count == '13'  # Parameters, statistics and metrics compared.
  # Float32 sums in another order; per-device statistics would be ~1e-2 off.
  for a, b in zip(one, four):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
