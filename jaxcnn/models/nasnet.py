"""NASNet-A Mobile, Large and CIFAR (Zoph et al., 2018), built from a genotype.

The cells are built from `jaxcnn.models.genotype` data (NASNet-A by default,
any genotype of the search space by `genotype=`), laid out as TF-slim's
`nets/nasnet`: ImageNet stem (conv3x3 stride 2 VALID + BN, two stem reduction
cells at F/4 and F/2) or CIFAR stem (conv3x3 + BN); three stages of
`num_cells` normal cells at F, 2F, 4F with a reduction cell before the second
and the third; ReLU, global average pooling, dropout, classifier.

Cell inputs: h = ReLU-1x1-BN of the current input; p = the previous cell's
output, adjusted when its size differs (ReLU, then two stride-2 1x1 paths,
the second shifted by one pixel, concatenated and normalised) or only its
channels (ReLU-1x1-BN). The first cell has no previous cell and reads its
input as p. With `skip_reduction` (NASNet-Large) the first normal cell after
a reduction cell takes the reduction cell's own p as its p.

`padding` picks the reference's behaviour at borders, where they differ for
pooling (convolutions are TF SAME in all three): 'slim' (SAME; max pooling
ignores the pads, average pooling excludes them), 'keras' (strided pooling
zero-pads then pools VALID: zeros take part in max pooling and count in the
average), 'timm' (max pooling pads -inf; strided average pooling counts the
zero pads, stride-1 excludes them).

Training extras, as slim: drop path on every op output but identities, at a
rate per cell of `drop_path_rate * (cell + 1) / total_cells` (stem cells
counted), ramped linearly by the `progress` call argument (fraction of
training done, clipped to [0, 1]); the auxiliary head after the second stage,
whose logits `__call__` sows as `('intermediates', 'aux_logits')` when
training (its loss weight, 0.4 in slim, is the training step's). With
`features_only=True` the model returns `{level: features}` (stride
2**level): the last cell output at each stride, before the final ReLU.
"""

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models import genotype as genotype_lib
from jaxcnn.models import layers
from jaxcnn.models import lowering as lowering_lib
from jaxcnn.models import registry

ModuleDef = Callable[..., nn.Module]

PADDINGS = ('slim', 'keras', 'timm')
AUX_LOGITS = 'aux_logits'  # Sown into the 'intermediates' collection.

# Registered name -> fields. Slim's hparams: drop path rate = 1 - keep prob,
# dropout = 1 - dense keep prob; the CIFAR model has its own BatchNorm.
_VARIANTS = {
    'nasnet_mobile': dict(num_cells=4, filters=44, stem_filters=32,
                          skip_reduction=False, drop_path_rate=0.0,
                          dropout_rate=0.5),
    'nasnet_large': dict(num_cells=6, filters=168, stem_filters=96,
                         skip_reduction=True, drop_path_rate=0.3,
                         dropout_rate=0.5),
    'nasnet_cifar': dict(stem='cifar', num_cells=6, filters=32,
                         stem_filters=96, skip_reduction=False,
                         drop_path_rate=0.4, dropout_rate=0.0,
                         bn_momentum=0.9, bn_epsilon=1e-5),
}
IMAGE_SIZES = {'nasnet_mobile': 224, 'nasnet_large': 331, 'nasnet_cifar': 32}

# Slim: variance scaling on fan_out for every conv and the classifier.
conv_kernel_init = layers.kaiming_normal_fan_out
depthwise_kernel_init = lowering_lib.tf_depthwise_kernel_init


class CellConfig(NamedTuple):
  """One cell of the network."""
  name: str
  reduction: bool
  filters: int
  drop_rate: float  # Drop path rate at the end of the ramp.
  stem: bool = False


def cell_configs(num_cells: int, filters: int, stem: str,
                 drop_path_rate: float) -> list[CellConfig]:
  """Every cell in order: stem cells (ImageNet), then the three stages."""
  plan = []
  if stem == 'imagenet':
    plan += [('stem_0', True, filters // 4, True),
             ('stem_1', True, filters // 2, True)]
  for stage in range(3):
    if stage:
      plan.append((f'reduction_{stage - 1}', True, filters * 2**stage, False))
    plan += [(f'cell_{stage * num_cells + i}', False, filters * 2**stage,
              False) for i in range(num_cells)]
  return [CellConfig(name, reduction, f, drop_path_rate * (i + 1) / len(plan),
                     is_stem)
          for i, (name, reduction, f, is_stem) in enumerate(plan)]


def _same_pads(x: jax.Array, window: tuple[int, int], stride: int,
               dilation: int = 1) -> tuple:
  size = tuple(dilation * (k - 1) + 1 for k in window)
  return tuple(jax.lax.padtype_to_pads(x.shape[1:3], size, (stride, stride),
                                       'SAME'))


def pool(x: jax.Array, kind: str, window: int, stride: int, padding: str,
         max_pool: Callable[..., jax.Array] = layers.max_pool) -> jax.Array:
  """SAME max or average pooling with `padding`'s border behaviour
  (`max_pool`: a Lowering's)."""
  pads = _same_pads(x, (window, window), stride)
  if kind == 'max':
    fill = 0.0 if padding == 'keras' and stride > 1 else -jnp.inf
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=fill)
    return max_pool(x, window, stride)
  count_pads = stride > 1 and padding in ('keras', 'timm')
  return nn.avg_pool(x, (window, window), (stride, stride), padding=pads,
                     count_include_pad=count_pads)


class ReluConvBN(nn.Module):
  """ReLU, k x k conv (SAME), BN."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  dilation: int = 1
  relu: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.relu:
      x = nn.relu(x)
    x = self.conv(self.filters, self.kernel, strides=self.stride,
                  kernel_dilation=self.dilation,
                  padding=_same_pads(x, self.kernel, self.stride,
                                     self.dilation), name='conv')(x)
    return self.norm(name='bn')(x)


class FactorizedReduce(nn.Module):
  """Halves the size: two stride-2 1x1 paths (the second shifted by one
  pixel) to `filters // 2` each, concatenated, BN. No ReLU of its own."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shifted = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:]
    paths = [self.conv(self.filters // 2, (1, 1), name=f'path{i}_conv')(
        path[:, ::2, ::2]) for i, path in ((1, x), (2, shifted))]
    return self.norm(name='bn')(jnp.concatenate(paths, axis=-1))


def _op_kind(op: str) -> tuple[str, int]:
  """(kind, kernel size) of a genotype op."""
  for kind in ('dilsep', 'sep', 'avg', 'max', 'dilconv'):
    if op.startswith(kind):
      return kind, int(op[len(kind):])
  if op.startswith('conv1x') and '_' in op:
    return 'factorized', int(op[len('conv1x')])
  if op.startswith('conv'):
    return 'conv', int(op[len('conv')])
  return op, 1


class Op(nn.Module):
  """One op of a block, mapping its input to `filters` channels."""
  op: str
  filters: int
  stride: int
  drop_rate: float
  padding: str
  conv: ModuleDef
  depthwise: ModuleDef
  norm: ModuleDef
  max_pool: Callable[..., jax.Array] = layers.max_pool

  @nn.compact
  def __call__(self, x: jax.Array, train: bool,
               progress: float | jax.Array) -> jax.Array:
    kind, k = _op_kind(self.op)
    relu_conv_bn = functools.partial(ReluConvBN, self.filters, self.conv,
                                     self.norm)
    if kind == 'id':
      if self.stride == 1 and x.shape[-1] == self.filters:
        return x
      return relu_conv_bn(stride=self.stride, name='project')(x)
    if kind in ('sep', 'dilsep'):
      x = self._separable(x, k, repeats=2 if kind == 'sep' else 1,
                          dilation=1 if kind == 'sep' else 2)
    elif kind in ('avg', 'max'):
      x = pool(x, kind, k, self.stride, self.padding, self.max_pool)
      if x.shape[-1] != self.filters:
        x = relu_conv_bn(relu=False, name='project')(x)
    elif kind in ('conv', 'dilconv'):
      x = relu_conv_bn(kernel=(k, k), stride=self.stride,
                       dilation=2 if kind == 'dilconv' else 1, name='conv')(x)
    else:  # 'factorized': 1xk then kx1.
      x = nn.relu(x)
      x = self.conv(self.filters, (1, k), strides=self.stride,
                    padding=_same_pads(x, (1, k), self.stride),
                    name='conv_1')(x)
      x = self.conv(self.filters, (k, 1), padding=_same_pads(x, (k, 1), 1),
                    name='conv_2')(x)
      x = self.norm(name='bn')(x)
    if train and self.drop_rate > 0:
      rate = self.drop_rate * jnp.clip(progress, 0.0, 1.0)
      x = layers.drop_path(x, rate, self.make_rng('dropout'))
    return x

  def _separable(self, x: jax.Array, k: int, repeats: int,
                 dilation: int) -> jax.Array:
    """[ReLU, depthwise k x k, pointwise to `filters`, BN] x repeats, the
    stride on the first."""
    stride = self.stride
    for i in range(1, repeats + 1):
      x = nn.relu(x)
      pads = _same_pads(x, (k, k), stride, dilation)
      if dilation == 1:
        x = self.depthwise(k, stride, pads, name=f'depthwise_{i}')(x)
      else:  # Same parameters as layers.DepthwiseConv: (k, k, 1, C).
        x = self.conv(x.shape[-1], (k, k), strides=stride, padding=pads,
                      kernel_dilation=dilation,
                      feature_group_count=x.shape[-1],
                      kernel_init=depthwise_kernel_init,
                      name=f'depthwise_{i}')(x)
      x = self.conv(self.filters, (1, 1), name=f'pointwise_{i}')(x)
      x = self.norm(name=f'bn_{i}')(x)
      stride = 1
    return x


class Cell(nn.Module):
  """A normal or reduction cell built from a genotype cell."""
  spec: genotype_lib.Cell
  config: CellConfig
  padding: str
  conv: ModuleDef
  depthwise: ModuleDef
  norm: ModuleDef
  max_pool: Callable[..., jax.Array] = layers.max_pool

  @nn.compact
  def __call__(self, x: jax.Array, prev: jax.Array | None, train: bool,
               progress: float | jax.Array) -> jax.Array:
    filters = self.config.filters
    if prev is None:
      prev = x
    elif prev.shape[1:3] != x.shape[1:3]:
      prev = FactorizedReduce(filters, self.conv, self.norm,
                              name='prev')(nn.relu(prev))
    elif prev.shape[-1] != filters:
      prev = ReluConvBN(filters, self.conv, self.norm, name='prev')(prev)
    states = [ReluConvBN(filters, self.conv, self.norm, name='base')(x), prev]

    op = functools.partial(Op, filters=filters,
                           drop_rate=self.config.drop_rate,
                           padding=self.padding, conv=self.conv,
                           depthwise=self.depthwise, norm=self.norm,
                           max_pool=self.max_pool)
    for i, block in enumerate(self.spec.blocks):
      outputs = []
      for side, state, name in (('a', block.input_a, block.op_a),
                                ('b', block.input_b, block.op_b)):
        stride = 2 if (self.config.reduction and
                       state < genotype_lib.NUM_INPUTS) else 1
        outputs.append(op(name, stride=stride, name=f'block{i}_{side}')(
            states[state], train, progress))
      states.append(outputs[0] + outputs[1])

    size = states[-1].shape[1:3]
    parts = []
    for index in self.spec.concat:
      state = states[index]
      # Only cell inputs can differ (slim's _combine_unused_states).
      if state.shape[1:3] != size:
        state = FactorizedReduce(filters, self.conv, self.norm,
                                 name=f'concat_{index}')(state)
      elif state.shape[-1] != filters:
        state = ReluConvBN(filters, self.conv, self.norm, relu=False,
                           name=f'concat_{index}')(state)
      parts.append(state)
    return jnp.concatenate(parts, axis=-1)


class AuxHead(nn.Module):
  """ReLU, avgpool 5/3 VALID, 1x1 conv 128, BN, ReLU, conv over the whole
  remaining map to 768, BN, ReLU, classifier."""
  num_classes: int
  conv: ModuleDef
  norm: ModuleDef
  dense: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.avg_pool(nn.relu(x), (5, 5), (3, 3))
    x = nn.relu(self.norm(name='bn_1')(
        self.conv(128, (1, 1), name='conv_1')(x)))
    size = x.shape[1:3]
    if 0 in size:
      raise layers.ImagesTooSmallError(
          f'The images are too small for the auxiliary head: its map is '
          f'{tuple(x.shape)}.')
    x = self.conv(768, size, padding='VALID', name='conv_2')(x)
    x = nn.relu(self.norm(name='bn_2')(x))
    return self.dense(self.num_classes, name='head')(x.reshape(x.shape[0], -1))


class NASNet(nn.Module):
  """NASNet; the defaults give NASNet-A Mobile (4 @ 1056) with slim borders.

  `genotype`: a GENOTYPES name or a genotype string (genotype.parse).
  `stem`: 'imagenet' or 'cifar'. `filters` is F (penultimate filters / 24).
  """
  num_classes: int
  genotype: str | genotype_lib.Genotype = 'nasnet_a'
  num_cells: int = 4  # Normal cells per stage (N).
  filters: int = 44
  stem_filters: int = 32
  stem: str = 'imagenet'
  skip_reduction: bool = False
  padding: str = 'slim'  # One of PADDINGS.
  dropout_rate: float = 0.5
  drop_path_rate: float = 0.0
  aux_head: bool = False
  bn_momentum: float = 0.9997
  bn_epsilon: float = 1e-3
  in_channels: int = 3
  features_only: bool = False
  lowering: lowering_lib.Lowering = lowering_lib.XLA
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               progress: float | jax.Array = 1.0
               ) -> jax.Array | dict[int, jax.Array]:
    """Logits [batch, num_classes], or `{level: features}` if features_only.

    Args:
      images: [batch, height, width, in_channels].
      train: batch statistics, dropout, drop path and the auxiliary head.
      progress: fraction of training done; drop path rates ramp up with it.
    """
    layers.check_images(images, self.in_channels, 'NASNet')
    if self.padding not in PADDINGS:
      raise ValueError(f'padding must be one of {", ".join(PADDINGS)}, got '
                       f'{self.padding!r}.')
    if self.stem not in ('imagenet', 'cifar'):
      raise ValueError(
          f"stem must be 'imagenet' or 'cifar', got {self.stem!r}.")
    genotype = genotype_lib.parse(self.genotype)
    conv, depthwise, norm = lowering_lib.tf_conv_layers(
        self.lowering, train, self.bn_momentum, self.bn_epsilon, self.dtype,
        self.param_dtype)
    dense = functools.partial(nn.Dense, kernel_init=conv_kernel_init,
                              dtype=self.dtype, param_dtype=self.param_dtype)

    if self.stem == 'imagenet':
      x = conv(self.stem_filters, (3, 3), strides=2, padding='VALID',
               name='stem_conv')(images)
      stride = 2
    else:
      x = conv(self.stem_filters, (3, 3), padding='SAME',
               name='stem_conv')(images)
      stride = 1
    x = norm(name='stem_bn')(x)

    configs = cell_configs(self.num_cells, self.filters, self.stem,
                           self.drop_path_rate)
    # The auxiliary head reads the last normal cell of the second stage.
    aux_after = [c.name for c in configs if not c.reduction][
        2 * self.num_cells - 1]
    features = {stride.bit_length() - 1: x}
    outputs = [None, x]
    after_reduction = False
    for cfg in configs:
      prev = outputs[-2]
      if self.skip_reduction and after_reduction:
        prev = outputs[-3]
      spec = genotype.reduce if cfg.reduction else genotype.normal
      x = Cell(spec, cfg, self.padding, conv, depthwise, norm,
               self.lowering.max_pool,
               name=cfg.name)(x, prev, train, progress)
      outputs.append(x)
      after_reduction = cfg.reduction and not cfg.stem
      stride *= 2 if cfg.reduction else 1
      features[stride.bit_length() - 1] = x
      if cfg.name == aux_after and self.aux_head and (
          train or self.is_initializing()):
        self.sow('intermediates', AUX_LOGITS,
                 AuxHead(self.num_classes, conv, norm, dense,
                         name='aux_head')(x))
    if self.features_only:
      return features

    x = layers.global_avg_pool(nn.relu(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes, name='head')(x)


for _name, _fields in _VARIANTS.items():
  registry.register(_name, functools.partial(NASNet, **_fields))
