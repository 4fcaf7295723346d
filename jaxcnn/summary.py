"""Per-layer output shapes, parameters and MACs of a model.

python -m jaxcnn.summary --model=NAME [--image_size=N] [--num_classes=K]

Everything is abstract (shapes and XLA's cost analysis of the lowered forward
pass in eval mode, batch 1): nothing is initialised, compiled or run, so even
EfficientNet-B7 at 600 px takes seconds on a CPU. MACs (multiply-accumulates)
are counted two ways:

  MACs: of the convolutions and dense layers, every kernel tap at every output
    position, the zero padding included: the count the papers and torchvision
    quote (ResNet-50 at 224: 4.09 G, EfficientNet-B0: 0.39 G).
  XLA MACs: flops / 2 of XLA's cost analysis. It skips the taps that fall on
    zero padding and counts elementwise work (BatchNorm, activations, pooling,
    residual adds) as flops too, so it is what this platform's lowering of
    the model does (ResNet-50: 3.97 G, EfficientNet-B0: 0.41 G). Per layer it
    is that layer's call alone; the total is of the whole forward pass, whose
    work outside the layers (activations, pooling, adds) is the `(other ops)`
    row.
"""

import dataclasses
import math
from typing import Any, Sequence

from absl import app
from absl import flags
from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import models
from jaxcnn.models import efficientdet
from jaxcnn.models import efficientnet
from jaxcnn.models import lowering

SUMMARY_FILE = 'model_summary.txt'
# Default input sizes of the models not trained at 224.
_IMAGE_SIZES = {'lenet5': 32, 'nasnet_cifar': 32, 'nasnet_large': 331,
                **efficientnet.IMAGE_SIZES, **efficientdet.IMAGE_SIZES}
_NUM_CLASSES = {'lenet5': 10, 'nasnet_cifar': 10,
                **{name: 90 for name in efficientdet.IMAGE_SIZES}}  # COCO.


@dataclasses.dataclass(frozen=True)
class Layer:
  """One leaf module call (a convolution, BatchNorm, dense layer, ...)."""
  path: str
  kind: str
  output_shape: Any  # A tuple, or a tree of them for several outputs.
  params: int
  macs: int  # Conv/dense taps, padding included; 0 for other layers.
  xla_macs: float


@dataclasses.dataclass(frozen=True)
class Summary:
  """A model's layers and totals for one `[1, H, W, C]` image."""
  name: str
  input_shape: tuple[int, ...]
  output_shape: Any  # A tuple, or a tree of them for several outputs.
  layers: list[Layer]
  params: int
  macs: int
  xla_macs: float  # Of the whole forward pass.

  @property
  def other_xla_macs(self) -> float:
    """XLA MACs of the work outside the layers (activations, pooling...)."""
    return self.xla_macs - sum(layer.xla_macs for layer in self.layers)


def default_image_shape(name: str) -> tuple[int, int, int]:
  """(H, W, C) a registered model is trained at."""
  size = _IMAGE_SIZES.get(name, 224)
  return size, size, models.create(name).in_channels


def default_num_classes(name: str) -> int:
  return _NUM_CLASSES.get(name, 1000)


def _xla_macs(function, *args) -> float:
  cost = jax.jit(function).lower(*args).cost_analysis()
  return float((cost or {}).get('flops', 0.0)) / 2


def _spec(x: Any) -> Any:
  return jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(
      x, jax.Array) else x


def _shapes(outputs: Any) -> Any:
  """An output's shape; a module with several outputs (a backbone's
  levels, a detector's per-level maps), the same tree of shapes."""
  if hasattr(outputs, 'shape'):
    return tuple(outputs.shape)
  return jax.tree.map(lambda x: tuple(x.shape), outputs)


def _subtree(variables: dict, path: tuple[str, ...]) -> dict:
  """The variables of the module at `path`, by collection."""
  out = {}
  for collection, tree in variables.items():
    for name in path:
      tree = tree.get(name, {}) if isinstance(tree, dict) else {}
    if tree:
      out[collection] = tree
  return out


def _count(tree: Any) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def summarize(model: nn.Module, image_shape: Sequence[int],
              name: str | None = None) -> Summary:
  """The layers and totals of `model` on one `image_shape` (H, W, C) image."""
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)

  def forward(variables, images):
    return model.apply(variables, images, train=False)

  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      calls.append((context.module.path, context.module.clone(parent=None),
                    jax.tree.map(_spec, (args, kwargs)), _shapes(out)))
    return out

  with nn.intercept_methods(record):
    output = jax.eval_shape(forward, variables, images)
  paths = {path for path, *_ in calls}
  parents = {path[:i] for path in paths for i in range(len(path))}
  layers, seen, cache = [], set(), {}
  for path, module, (args, kwargs), out_shape in calls:
    if path in parents or path in seen or not path:
      continue
    seen.add(path)
    own = _subtree(variables, path)

    # Only the arrays are traced; Python values (e.g. a positional `train`)
    # stay static, as in the model's own call.
    leaves, treedef = jax.tree.flatten(args)
    traced = [isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves]

    def call(own, arrays, module=module, kwargs=kwargs, leaves=leaves,
             traced=traced, treedef=treedef):
      arrays = iter(arrays)
      args = [next(arrays) if t else leaf for leaf, t in zip(leaves, traced)]
      return module.apply(own, *jax.tree.unflatten(treedef, args), **kwargs)

    # Repeated blocks share their cost: one lowering per distinct layer.
    key = (repr(module.clone(name='layer')), repr((own, args, kwargs)))
    if key not in cache:
      cache[key] = _xla_macs(
          call, own, [leaf for leaf, t in zip(leaves, traced) if t])
    kernel = own.get('params', {}).get('kernel')
    macs = (math.prod(out_shape[1:-1]) * math.prod(kernel.shape)
            if kernel is not None else 0)
    layers.append(Layer('/'.join(path), type(module).__name__,
                        out_shape, _count(own.get('params', {})),
                        macs, cache[key]))
  return Summary(name or type(model).__name__, tuple(images.shape),
                 _shapes(output), layers, _count(variables['params']),
                 sum(layer.macs for layer in layers),
                 _xla_macs(forward, variables, images))


def _si(value: float) -> str:
  """'4.089 G', '416.5 K': four digits in the largest unit that fits."""
  for scale, unit in ((1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
    if value >= scale:
      return f'{value / scale:.4g} {unit}'
  return f'{value:.0f}'


def _short(shape: Any) -> str:
  if _is_shape(shape):
    return str(shape)
  return f'{len(jax.tree.leaves(shape, is_leaf=_is_shape))} outputs'


def _is_shape(x: Any) -> bool:
  return isinstance(x, tuple) and all(isinstance(n, int) for n in x)


def format_summary(summary: Summary) -> str:
  """A table of every layer, then the totals."""
  header = ('layer', 'kind', 'output', 'params', 'MACs', 'XLA MACs')
  rows = [(layer.path, layer.kind, str(layer.output_shape),
           f'{layer.params:,}', f'{layer.macs:,}', f'{layer.xla_macs:,.0f}')
          for layer in summary.layers]
  rows.append(('(other ops)', '', '', '', '',
               f'{summary.other_xla_macs:,.0f}'))
  rows.append(('total', '', _short(summary.output_shape),
               f'{summary.params:,}',
               f'{summary.macs:,}', f'{summary.xla_macs:,.0f}'))
  widths = [max(len(row[i]) for row in (header, *rows))
            for i in range(len(header))]

  def line(row):
    return '  '.join(cell.ljust(w) if i < 3 else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

  rule = '-' * len(line(header))
  return '\n'.join([
      f'{summary.name}: input {summary.input_shape}, output '
      f'{summary.output_shape}, eval mode', '', line(header), rule,
      *map(line, rows[:-1]), rule, line(rows[-1]), '',
      f'parameters: {summary.params:,}',
      f'MACs: {_si(summary.macs)} (convolutions and dense layers, every '
      'kernel tap incl. zero padding, as papers count)',
      f'XLA MACs: {_si(summary.xla_macs)} (flops / 2 of XLA\'s cost '
      'analysis of the forward pass: padding taps skipped, elementwise ops '
      'included)', ''])


def write_summary(model: nn.Module, image_shape: Sequence[int], path: str,
                  name: str | None = None) -> Summary:
  """Writes `format_summary` of `model` to `path` (local or gs://)."""
  summary = summarize(model, image_shape, name)
  epath.Path(path).write_text(format_summary(summary))
  return summary


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.model not in models.names():
    raise app.UsageError(f'--model={FLAGS.model}: choose one of '
                         f'{", ".join(models.names())}.')
  height, width, channels = default_image_shape(FLAGS.model)
  if FLAGS.image_size:
    height = width = FLAGS.image_size
  model = models.create(
      FLAGS.model, num_classes=FLAGS.num_classes or
      default_num_classes(FLAGS.model),
      lowering=lowering.for_platform(jax.default_backend()))
  try:
    summary = summarize(model, (height, width, channels), FLAGS.model)
  except ValueError as e:  # The model's own message: the size it takes.
    raise SystemExit(f'FATAL {str(e).splitlines()[0]}') from None
  print(format_summary(summary), end='')


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (train.py imports this
  module)."""
  flags.DEFINE_string('model', None, 'A registered model name.')
  flags.DEFINE_integer('image_size', None, 'Input height and width (default: '
                       "the model's training resolution).", lower_bound=1)
  flags.DEFINE_integer('num_classes', None,
                       'Outputs (default: 10 for lenet5, else 1000).',
                       lower_bound=1)
  flags.mark_flags_as_required(['model'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
