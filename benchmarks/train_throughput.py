"""Train-step speed of a model on synthetic data already on the device.

  python -m benchmarks.train_throughput --model=efficientnet_b0 --batch=8

Uses the model's recipe from configs/ (optimizer, weight decay, EMA, label
smoothing) and the real jitted train step; reports compile time and the
median step time and images/s over the timed steps. Imports no TensorFlow.
"""

import functools
import importlib
import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxcnn import models
from jaxcnn import optim
from jaxcnn import sharding
from jaxcnn import state as state_lib
from jaxcnn import step as step_lib

FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'resnet50', 'Registered model name.')
flags.DEFINE_string('recipe', '', 'Config module in configs/ (default: the '
                    "model's own recipe if there is one, else base).")
flags.DEFINE_integer('batch', 256, 'Global batch size.')
flags.DEFINE_integer('image_size', 0, "Default: the recipe's image size.")
flags.DEFINE_integer('steps', 20, 'Timed steps.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
flags.DEFINE_bool('bf16', False, 'bfloat16 compute (half_precision).')
flags.DEFINE_string('json_out', '', 'Also write the results here as JSON.')


def _recipe(model: str, recipe: str):
  configs_dir = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                             'configs')
  name = recipe or (model if os.path.exists(
      os.path.join(configs_dir, f'{model}.py')) else 'base')
  config = importlib.import_module(f'configs.{name}').get_config()
  config.unlock()
  config.model = model
  return config, name


def measure(config, batch: int, steps: int, warmup: int) -> dict:
  """Compile time and per-step times of the real train step."""
  model = models.from_config(config, num_classes=1000)
  shape = (config.image_size, config.image_size, model.in_channels)
  mesh = sharding.create_mesh()
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=1000)
  tx = optim.create_optimizer(config, schedule)
  variables = jax.jit(functools.partial(
      state_lib.initial_variables, model, image_shape=shape))(
          state_lib.init_key(0))
  state = state_lib.create(model, tx, variables, config.ema_decay > 0)
  state_sharding = sharding.state_shardings(mesh, state)
  state = jax.device_put(state, state_sharding)
  rng = np.random.RandomState(0)
  data = sharding.global_batch(
      {'image': rng.normal(size=(batch, *shape)).astype(np.float32),
       'label': rng.randint(0, 1000, size=batch).astype(np.int32)},
      sharding.batch_sharding(mesh))
  l2 = config.weight_decay if config.weight_decay_mode == 'l2' else 0.0
  train_step = jax.jit(
      functools.partial(step_lib.train_step, rng=jax.random.PRNGKey(1),
                        learning_rate_fn=schedule,
                        label_smoothing=config.label_smoothing, l2_weight=l2,
                        ema_decay=config.ema_decay),
      in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=0)
  start = time.perf_counter()
  compiled = train_step.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, data)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  return {'compile_s': compile_s, 'step_s': step_s,
          'images_per_s': batch / step_s,
          'loss': float(metrics['loss'])}


def main(argv):
  del argv
  config, recipe = _recipe(FLAGS.model, FLAGS.recipe)
  if FLAGS.image_size:
    config.image_size = FLAGS.image_size
  config.half_precision = FLAGS.bf16
  results = measure(config, FLAGS.batch, FLAGS.steps, FLAGS.warmup)
  device = jax.devices()[0]
  report = {
      'model': FLAGS.model, 'recipe': recipe, 'batch': FLAGS.batch,
      'image_size': config.image_size,
      'dtype': 'bfloat16' if FLAGS.bf16 else 'float32',
      'device': f'{device.platform}: {device.device_kind}',
      'devices': jax.device_count(), 'cpu': platform.processor() or
      platform.machine(), 'cores': os.cpu_count(), 'jax': jax.__version__,
      **results}
  print(json.dumps(report, indent=2))
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump(report, f, indent=2)


if __name__ == '__main__':
  app.run(main)
