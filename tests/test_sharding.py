"""Data parallelism: 8 devices compute the same step as 1 device.

In float64: float32 rounding differs between 1 and 8 partial sums by up to
~1e-4 after a step, which would hide nothing but also prove nothing; a real
difference (e.g. per-device BatchNorm statistics) is ~1e-2 either way.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np

_SCRIPT = textwrap.dedent('''
    import functools, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    from configs import quickstart
    from jaxcnn import models, sharding, state as state_lib, step as step_lib
    from jaxcnn import tasks

    jax.config.update('jax_enable_x64', True)
    config = quickstart.get_config()
    config.label_smoothing = 0.1
    task = tasks.create(config)
    assert jax.device_count() == 8, jax.devices()
    model = models.create('resnet18', num_classes=10, dtype=jnp.float64,
                          param_dtype=jnp.float64)
    variables = jax.device_get(state_lib.initial_variables(
        model, jax.random.PRNGKey(0), (32, 32, 3)))
    rng = np.random.RandomState(0)
    batch = {'image': rng.normal(size=(16, 32, 32, 3)),
             'label': rng.randint(0, 10, size=16).astype(np.int32)}

    def run(devices):
      mesh = sharding.create_mesh(devices)
      state = state_lib.create(model, optax.sgd(0.1, 0.9), variables, True)
      state_sharding = sharding.state_shardings(mesh, state)
      state = jax.device_put(state, state_sharding)
      step = jax.jit(
          functools.partial(step_lib.train_step, loss_fn=task.loss,
                            rng=jax.random.PRNGKey(1),
                            learning_rate_fn=optax.constant_schedule(0.1),
                            l2_weight=1e-4, ema_decay=0.99),
          in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
          out_shardings=(state_sharding, sharding.replicated(mesh)),
          donate_argnums=0)
      global_batch = sharding.global_batch(batch, sharding.batch_sharding(mesh))
      assert len(global_batch['image'].sharding.device_set) == len(devices)
      state, metrics = step(state, global_batch)
      return jax.device_get((state.params, state.batch_stats, state.ema,
                             metrics))

    one = run(jax.devices()[:1])
    eight = run(jax.devices())
    np.savez(sys.argv[1], *jax.tree.leaves(one), *jax.tree.leaves(eight))
    print(len(jax.tree.leaves(one)))
''')


def test_eight_device_step_equals_one_device_step(tmp_path):
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  out = tmp_path / 'leaves.npz'
  result = subprocess.run(
      [sys.executable, '-c', _SCRIPT, str(out)], env=env, capture_output=True,
      text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr[-3000:]
  count = int(result.stdout.split()[-1])
  arrays = np.load(out)
  leaves = [arrays[f'arr_{i}'] for i in range(2 * count)]
  one, eight = leaves[:count], leaves[count:]
  assert count > 100  # params, batch stats, EMA and metrics all compared.
  assert sum(a.dtype == np.float64 for a in one) > 100
  for a, b in zip(one, eight):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
