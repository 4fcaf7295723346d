"""A network's depthwise convolutions, one implementation against another.

  python -m benchmarks.depthwise_layers --model=efficientnet_b0 --batch=256

Finds every depthwise layer of the model at its recipe's image size (input
shape, kernel, stride, padding: what `layers.DepthwiseConv` is called with
in a forward pass) and times, per distinct layer and per implementation
(`--implementations`: the depthwise choices of jaxcnn/models/lowering.py),
forward and both gradients of `layers.DepthwiseConv`
in the model's compute dtype: the median of `--steps` calls after
compilation and a warm-up call, device synchronised. Reports milliseconds
per layer, their sum over the network (each layer times how often the
network has it) and the speed-up over the first implementation. As the
layers are memory-bound, each time also comes as a share of the device's
measured copy bandwidth: the least the three operations must move (read
x, write y; read dy, write dx; read x and dy) over the time, against the
fastest read + write of a large array. An implementation that cannot run
here (e.g. 'pallas' off GPUs) is reported with its error. Imports no
TensorFlow.
"""

import collections
import datetime
import os
import statistics
import sys
from typing import Any

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import report as report_lib
from benchmarks import train_throughput
from jaxcnn import models
from jaxcnn.models import layers
from jaxcnn.models import lowering

FLAGS = flags.FLAGS

# (input shape, kernel size, stride, padding) of one depthwise layer.
Layer = tuple[tuple[int, ...], int, int, Any]


def _define_flags() -> None:
  flags.DEFINE_string('model', 'efficientnet_b0', 'Registered model name.')
  flags.DEFINE_integer('batch', 256, 'Batch size.')
  flags.DEFINE_integer('image_size', 0, "Default: the recipe's image size.")
  flags.DEFINE_enum('dtype', 'bfloat16', train_throughput.DTYPES,
                    'Compute dtype (parameters stay float32).')
  flags.DEFINE_list('implementations', list(lowering.CHOICES['depthwise']),
                    'Depthwise lowerings to time (lowering.CHOICES).')
  flags.DEFINE_integer('steps', 20, 'Timed calls per layer.')
  flags.DEFINE_string('json_out', '', 'Also write the report here as JSON.')


def depthwise_layers(model: str, image_size: int, batch: int,
                     dtype: Any) -> collections.Counter:
  """Each depthwise layer of `model` on [batch, image_size, image_size, 3]
  images, with how many times the network has it."""
  module = models.create(model, dtype=dtype)
  found = collections.Counter()

  def record(next_fun, args, kwargs, context):
    if (isinstance(context.module, layers.DepthwiseConv)
        and context.method_name == '__call__'):
      m = context.module
      padding = (m.padding if isinstance(m.padding, str)
                 else tuple(map(tuple, m.padding)))
      found[(tuple(args[0].shape), m.kernel_size, m.strides, padding)] += 1
    return next_fun(*args, **kwargs)

  images = jnp.zeros((batch, image_size, image_size, 3), jnp.float32)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: module.init(jax.random.key(0), images,
                                       train=False))
  return found


def least_bytes(layer: Layer, dtype: Any) -> int:
  """Bytes forward and both gradients must move at least: x and y three
  times each (the kernel is negligible)."""
  shape, kernel_size, stride, padding = layer
  module = lowering.XLA.depthwise_conv(kernel_size, stride, padding,
                                       dtype=dtype)
  x = jax.ShapeDtypeStruct(shape, dtype)
  params = jax.eval_shape(module.init, jax.random.key(0), x)
  y = jax.eval_shape(module.apply, params, x)
  return 3 * (x.size + y.size) * jnp.dtype(dtype).itemsize


def measured_bandwidth(size_bytes: int = 0, repeats: int = 5
                       ) -> tuple[float, str]:
  """Bytes/s of the fastest of `repeats` reads and writes of a float32
  array of `size_bytes` (0: 1 GiB, or 64 MiB on CPU) on the default device,
  and that description."""
  size_bytes = size_bytes or (
      64 << 20 if jax.devices()[0].platform == 'cpu' else 1 << 30)
  x = jnp.zeros(size_bytes // 4, jnp.float32)
  best = min(train_throughput.call_seconds(jax.jit(lambda x: x + 1), (x,),
                                           repeats))
  return (2 * x.nbytes / best,
          f'fastest of {repeats} runs of x + 1 on {x.nbytes >> 20} MiB of '
          'float32 (read + write)')


def time_layer(layer: Layer, implementation: str, dtype: Any,
               steps: int) -> float:
  """Median seconds of forward + both gradients of one DepthwiseConv
  lowered as `implementation`."""
  shape, kernel_size, stride, padding = layer
  module = lowering.Lowering(depthwise=implementation).depthwise_conv(
      kernel_size, stride, padding, dtype=dtype)
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.normal(size=shape), dtype)
  params = module.init(jax.random.key(0), x)

  @jax.jit
  def forward_backward(params, x):
    out, vjp = jax.vjp(module.apply, params, x)
    return vjp(jnp.ones_like(out))

  return statistics.median(
      train_throughput.call_seconds(forward_backward, (params, x), steps))


def measure(model: str, image_size: int, batch: int, dtype: Any,
            implementations: list[str], steps: int) -> list[dict[str, Any]]:
  """Per distinct layer: its shape, count and the time (or the error) of
  each implementation."""
  rows = []
  for layer, count in depthwise_layers(model, image_size, batch,
                                       dtype).items():
    shape, kernel_size, stride, padding = layer
    row = {'input_shape': list(shape), 'kernel_size': kernel_size,
           'stride': stride, 'padding': padding, 'count': count,
           'least_bytes': least_bytes(layer, dtype), 'seconds': {},
           'errors': {}}
    for implementation in implementations:
      try:
        row['seconds'][implementation] = time_layer(layer, implementation,
                                                    dtype, steps)
      except Exception as error:  # pylint: disable=broad-except
        # Any failure (refused here, rejected by Triton's compiler, out of
        # memory) is this implementation's result; the others still run.
        row['errors'][implementation] = f'{type(error).__name__}: {error}'
    rows.append(row)
  return rows


def network_seconds(rows: list[dict[str, Any]]) -> dict[str, float]:
  """Seconds over the network (each layer times its count) of every
  implementation that ran on every layer."""
  complete = set.intersection(*(set(row['seconds']) for row in rows))
  return {name: sum(row['seconds'][name] * row['count'] for row in rows)
          for name in complete}


def fastest(rows: list[dict[str, Any]]) -> str | None:
  """The implementation fastest over the network, of those that ran on
  every layer: what to pass as --config.lowering.depthwise=... (or
  benchmarks' --lowering=depthwise=...) elsewhere."""
  totals = network_seconds(rows)
  return min(totals, key=totals.get) if totals else None


def table(rows: list[dict[str, Any]], implementations: list[str],
          bandwidth: float) -> str:
  """Milliseconds (and share of the copy `bandwidth`, bytes/s) per layer and
  over the network; speed-up over the first implementation."""

  def cell(seconds: float | None, least_bytes: int) -> str:
    if seconds is None:
      return '-'
    return f'{seconds * 1e3:.2f} ({least_bytes / seconds / bandwidth:.0%})'

  base = implementations[0]
  totals = network_seconds(rows)
  lines = ['| input | k | stride | count | ' +
           ' | '.join(f'{name} ms (bandwidth)' for name in implementations)
           + ' |',
           '|---|---:|---:|---:|' + '---:|' * len(implementations)]
  network_bytes = sum(row['least_bytes'] * row['count'] for row in rows)
  for row in rows:
    cells = [cell(row['seconds'].get(name), row['least_bytes'])
             for name in implementations]
    lines.append(f"| {'x'.join(map(str, row['input_shape']))} | "
                 f"{row['kernel_size']} | {row['stride']} | {row['count']} | "
                 + ' | '.join(cells) + ' |')
  lines.append('| network (sum x count) | | | | ' + ' | '.join(
      cell(totals.get(name), network_bytes) for name in implementations)
      + ' |')
  for name in implementations[1:]:
    if name in totals and base in totals:
      lines.append(f'{name}: {totals[base] / totals[name]:.2f}x {base} '
                   'over the network')
  for name, error in sorted({(n, e) for row in rows
                             for n, e in row['errors'].items()}):
    lines.append(f'{name} not timed: {error}')
  return '\n'.join(lines)


def main(argv):
  del argv
  config, _ = train_throughput.load_recipe(FLAGS.model, '')
  image_size = FLAGS.image_size or config.image_size
  dtype = jnp.dtype(FLAGS.dtype)
  rows = measure(FLAGS.model, image_size, FLAGS.batch, dtype,
                 FLAGS.implementations, FLAGS.steps)
  if not rows:
    raise app.UsageError(f'{FLAGS.model} has no depthwise convolutions '
                         '(layers.DepthwiseConv); try efficientnet_b0.')
  bandwidth, bandwidth_source = measured_bandwidth()
  report = {
      'command': 'python -m benchmarks.depthwise_layers ' +
                 ' '.join(sys.argv[1:]),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'model': FLAGS.model, 'image_size': image_size, 'batch': FLAGS.batch,
      'dtype': FLAGS.dtype, 'steps': FLAGS.steps,
      'device': jax.devices()[0].device_kind,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'jax': jax.__version__, 'copy_bandwidth_bytes_per_s': bandwidth,
      'copy_bandwidth': bandwidth_source,
      'fastest': fastest(rows), 'network_seconds': network_seconds(rows),
      'layers': rows}
  report_lib.emit(report, FLAGS.json_out)
  print(f'copy bandwidth {bandwidth / 1e9:.0f} GB/s ({bandwidth_source})')
  print(table(rows, FLAGS.implementations, bandwidth))
  print(f"fastest over the network: {report['fastest']}")


if __name__ == '__main__':
  _define_flags()
  app.run(main)
