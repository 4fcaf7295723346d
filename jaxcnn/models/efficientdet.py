"""EfficientDet D0..D7x (Tan, Pang & Le, 2020), laid out like effdet.

An EfficientNet (or any registered `features_only`) backbone gives C3..C5;
P6 = 1x1 conv + BN + max-pool 3/2 of C5, P7 = max-pool of P6 (D7x adds P8 the
same way). `fpn_repeats` BiFPN cells follow, wired as effdet's `bifpn_config`:
top-down nodes P6..P3 (each fusing its level with the upsampled node above),
then bottom-up nodes P4..P7 (its level's inputs and the downsampled node
below). An input whose channels differ from the BiFPN width is resampled by
its own 1x1 conv + BN on every edge (so only in the first cell); upsampling
is nearest, downsampling max-pool 3/2. Fusion is fast normalised
(relu(w) / (sum relu(w) + 1e-4)) or, for D6/D7/D7x, a plain sum; then swish,
a separable 3x3 conv and BN (momentum 0.99, eps 1e-3).

The class and box heads run the same separable convs on every level, each
followed by that level's own BN and swish, then a separable predictor.
`apply(variables, images)` returns `(class_outputs, box_outputs)`: lists over
levels min_level..max_level of NHWC maps with `num_anchors * num_classes`
and `num_anchors * 4` channels, channel = anchor * num_classes + class (box:
anchor * 4 + coordinate), as effdet.

`padding='same'` with `redundant_bias=True` is effdet's `tf_efficientdet_d*`
(TF SAME padding, a bias before every BN as in the TF weights);
`padding='symmetric'` with `redundant_bias=False` its `efficientdet_d*`.
effdet sizes its resampling from `config.image_size`, which must equal the
input; sides that are multiples of 2**max_level keep every level exact.
"""

import functools
import math
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.models import layers
from jaxcnn.models import lowering as lowering_lib
from jaxcnn.models import registry

ModuleDef = Callable[..., nn.Module]

FUSIONS = ('fast', 'sum')
MIN_LEVEL = 3
# Anchors per location: 3 octave scales x 3 aspect ratios.
NUM_ANCHORS = 9
CLASS_PRIOR = 0.01  # The class bias starts at -log((1 - p) / p).


class _Variant(NamedTuple):
  backbone: str
  image_size: int
  fpn_channels: int
  fpn_repeats: int
  head_repeats: int
  fusion: str = 'fast'
  max_level: int = 7
  anchor_scale: float = 4.0


_VARIANTS = {
    'efficientdet_d0': _Variant('efficientnet_b0', 512, 64, 3, 3),
    'efficientdet_d1': _Variant('efficientnet_b1', 640, 88, 4, 3),
    'efficientdet_d2': _Variant('efficientnet_b2', 768, 112, 5, 3),
    'efficientdet_d3': _Variant('efficientnet_b3', 896, 160, 6, 4),
    'efficientdet_d4': _Variant('efficientnet_b4', 1024, 224, 7, 4),
    'efficientdet_d5': _Variant('efficientnet_b5', 1280, 288, 7, 4),
    'efficientdet_d6': _Variant('efficientnet_b6', 1280, 384, 8, 5, 'sum'),
    'efficientdet_d7': _Variant('efficientnet_b6', 1536, 384, 8, 5, 'sum',
                                anchor_scale=5.0),
    'efficientdet_d7x': _Variant('efficientnet_b7', 1536, 384, 8, 5, 'sum',
                                 max_level=8),
}

# Default image side and anchor scale of each registered variant.
IMAGE_SIZES = {name: v.image_size for name, v in _VARIANTS.items()}
ANCHOR_SCALES = {name: v.anchor_scale for name, v in _VARIANTS.items()}

# effdet's TF-style initialisers. BiFPN: glorot uniform; a depthwise kernel
# (k, k, 1, C) has fan_in = fan_out = k*k there, i.e. Flax's fan_in.
bifpn_kernel_init = nn.initializers.glorot_uniform()
bifpn_depthwise_init = nn.initializers.variance_scaling(
    1.0, 'fan_in', 'uniform')
# Heads: normal(0, sqrt(1 / fan_in)), depthwise and pointwise alike.
head_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
# The class predictor's bias: every class starts at probability CLASS_PRIOR.
class_bias_init = nn.initializers.constant(
    -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR))


class FpnNode(NamedTuple):
  """A BiFPN node: its level and the cell-state indices it fuses."""
  level: int
  inputs: tuple[int, ...]


def bifpn_nodes(min_level: int, max_level: int) -> list[FpnNode]:
  """One cell's nodes. State i < num_levels is input level min_level + i;
  node j appends state num_levels + j. The last node per level is output."""
  num_levels = max_level - min_level + 1
  last = {min_level + i: i for i in range(num_levels)}  # Latest state.
  every = {level: [index] for level, index in last.items()}
  nodes = []

  def add(level, inputs):
    nodes.append(FpnNode(level, tuple(inputs)))
    last[level] = num_levels + len(nodes) - 1
    every[level].append(last[level])

  for level in range(max_level - 1, min_level - 1, -1):  # Top-down.
    add(level, [last[level], last[level + 1]])
  for level in range(min_level + 1, max_level + 1):  # Bottom-up.
    add(level, every[level] + [last[level - 1]])
  return nodes


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """torch `interpolate(mode='nearest')`: source index floor(i * in / out)."""
  if tuple(size) == (2 * x.shape[1], 2 * x.shape[2]):
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  rows = np.floor(np.arange(size[0]) * (x.shape[1] / size[0])).astype(int)
  cols = np.floor(np.arange(size[1]) * (x.shape[2] / size[1])).astype(int)
  return x[:, rows][:, :, cols]


def downsample(x: jax.Array, padding: str,
               max_pool: Callable[..., jax.Array] = layers.max_pool
               ) -> jax.Array:
  """Max-pool 3/2: TF SAME for 'same', torch padding 1 for 'symmetric';
  both pad -inf. `max_pool` is layers.max_pool's signature."""
  if padding == 'symmetric':
    return max_pool(x, 3, 2, padding=1)
  pads = jax.lax.padtype_to_pads(x.shape[1:3], (3, 3), (2, 2), 'SAME')
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  return max_pool(x, 3, 2)


class SeparableConv(nn.Module):
  """Depthwise 3x3 (no bias) then 1x1 conv (bias if `use_bias`)."""
  features: int
  use_bias: bool
  depthwise_init: Any
  kernel_init: Any
  lowering: lowering_lib.Lowering
  bias_init: Any = nn.initializers.zeros
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # Stride 1: TF SAME and torch padding 1 agree.
    x = self.lowering.depthwise_conv(
        3, kernel_init=self.depthwise_init, dtype=self.dtype,
        param_dtype=self.param_dtype, name='depthwise')(x)
    return self.lowering.conv(
        self.features, (1, 1), use_bias=self.use_bias,
        kernel_init=self.kernel_init, bias_init=self.bias_init,
        dtype=self.dtype, param_dtype=self.param_dtype, name='pointwise')(x)


class Resample(nn.Module):
  """Brings a feature map to the BiFPN width (1x1 conv + BN, only when the
  channels differ) and to `size` (nearest upsampling or max-pool 3/2)."""
  channels: int
  size: tuple[int, int]
  padding: str
  use_bias: bool
  norm: ModuleDef
  lowering: lowering_lib.Lowering
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.channels:
      x = self.lowering.conv(self.channels, (1, 1), use_bias=self.use_bias,
                             kernel_init=bifpn_kernel_init, dtype=self.dtype,
                             param_dtype=self.param_dtype, name='conv')(x)
      x = self.norm(name='bn')(x)
    height, width = x.shape[1:3]
    if height > self.size[0] and width > self.size[1]:
      x = downsample(x, self.padding, self.lowering.max_pool)
    elif height < self.size[0] or width < self.size[1]:
      x = nearest_resize(x, self.size)
    return x


class BiFpnCell(nn.Module):
  """One BiFPN cell over levels min_level..max_level."""
  channels: int
  min_level: int
  max_level: int
  fusion: str
  padding: str
  redundant_bias: bool
  norm: ModuleDef
  lowering: lowering_lib.Lowering
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: list[jax.Array]) -> list[jax.Array]:
    states = list(features)
    sizes = {self.min_level + i: f.shape[1:3] for i, f in enumerate(features)}
    for j, node in enumerate(bifpn_nodes(self.min_level, self.max_level)):
      inputs = [
          Resample(self.channels, sizes[node.level], self.padding,
                   self.redundant_bias, self.norm, self.lowering,
                   self.dtype, self.param_dtype,
                   name=f'node_{j}_resample_{i}')(states[i])
          for i in node.inputs]
      if self.fusion == 'fast':
        weights = nn.relu(self.param(f'node_{j}_weights', nn.initializers.ones,
                                     (len(inputs),), self.param_dtype))
        weights = (weights / (jnp.sum(weights) + 1e-4)).astype(self.dtype)
        x = sum(w * x for w, x in zip(weights, inputs))
      else:
        x = sum(inputs)
      x = SeparableConv(self.channels, self.redundant_bias,
                        bifpn_depthwise_init, bifpn_kernel_init,
                        self.lowering, dtype=self.dtype,
                        param_dtype=self.param_dtype,
                        name=f'node_{j}_conv')(nn.swish(x))
      states.append(self.norm(name=f'node_{j}_bn')(x))
    return states[-len(features):]


class Head(nn.Module):
  """Class or box net: convs shared across levels, BatchNorm per level."""
  outputs: int  # Per anchor.
  channels: int
  repeats: int
  redundant_bias: bool
  norm: ModuleDef
  lowering: lowering_lib.Lowering
  bias_init: Any = nn.initializers.zeros
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: list[jax.Array]) -> list[jax.Array]:
    separable = functools.partial(
        SeparableConv, depthwise_init=head_kernel_init,
        kernel_init=head_kernel_init, lowering=self.lowering,
        dtype=self.dtype, param_dtype=self.param_dtype)
    convs = [separable(self.channels, self.redundant_bias, name=f'conv_{r}')
             for r in range(self.repeats)]
    predict = separable(NUM_ANCHORS * self.outputs, True,
                        bias_init=self.bias_init, name='predict')
    outputs = []
    for level, x in enumerate(features):
      for r, conv in enumerate(convs):
        x = nn.swish(self.norm(name=f'bn_{r}_{level}')(conv(x)))
      outputs.append(predict(x))
    return outputs


class EfficientDet(nn.Module):
  """EfficientDet; the defaults give D0 (effdet `tf_efficientdet_d0`)."""
  num_classes: int
  backbone: str = 'efficientnet_b0'  # A registered features_only model.
  backbone_kwargs: Mapping[str, Any] | None = None  # Its field overrides.
  fpn_channels: int = 64
  fpn_repeats: int = 3
  head_repeats: int = 3
  max_level: int = 7
  fusion: str = 'fast'  # One of FUSIONS.
  padding: str = 'same'  # 'same' (TF) or 'symmetric' (torch).
  redundant_bias: bool = True  # A conv bias before each BN, as TF's weights.
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  in_channels: int = 3
  lowering: lowering_lib.Lowering = lowering_lib.XLA
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False
               ) -> tuple[list[jax.Array], list[jax.Array]]:
    """(class_outputs, box_outputs), each a list over levels 3..max_level."""
    layers.check_images(images, self.in_channels, 'EfficientDet')
    if self.fusion not in FUSIONS:
      raise ValueError(f'fusion must be one of {", ".join(FUSIONS)}, got '
                       f'{self.fusion!r}.')
    if self.padding not in ('same', 'symmetric'):
      raise ValueError(
          f"padding must be 'same' or 'symmetric', got {self.padding!r}.")
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    features = self._backbone()(images, train=train)
    levels = [features[level] for level in sorted(features)
              if level >= MIN_LEVEL]
    for level in range(MIN_LEVEL + len(levels), self.max_level + 1):
      previous = levels[-1]
      size = tuple(-(-s // 2) for s in previous.shape[1:3])
      levels.append(Resample(self.fpn_channels, size, self.padding,
                             self.redundant_bias, norm, self.lowering,
                             self.dtype, self.param_dtype,
                             name=f'p{level}_resample')(previous))
    for r in range(self.fpn_repeats):
      levels = BiFpnCell(self.fpn_channels, MIN_LEVEL, self.max_level,
                         self.fusion, self.padding, self.redundant_bias, norm,
                         self.lowering, self.dtype, self.param_dtype,
                         name=f'bifpn_{r}')(levels)
    head = functools.partial(Head, channels=self.fpn_channels,
                             repeats=self.head_repeats,
                             redundant_bias=self.redundant_bias, norm=norm,
                             lowering=self.lowering, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    class_outputs = head(self.num_classes, bias_init=class_bias_init,
                         name='class_net')(levels)
    box_outputs = head(4, name='box_net')(levels)
    return class_outputs, box_outputs

  def _backbone(self) -> nn.Module:
    overrides = {'padding': self.padding, 'features_only': True,
                 'in_channels': self.in_channels, 'lowering': self.lowering,
                 'dtype': self.dtype, 'param_dtype': self.param_dtype,
                 **(self.backbone_kwargs or {})}
    if not self.backbone.startswith('efficientnet'):
      del overrides['padding']  # Other families name their borders apart.
    module = registry.create(self.backbone, num_classes=1, **overrides)
    return module.clone(parent=self, name='backbone')


def _register(name: str, variant: _Variant) -> None:
  registry.register(name, functools.partial(
      EfficientDet, backbone=variant.backbone,
      fpn_channels=variant.fpn_channels, fpn_repeats=variant.fpn_repeats,
      head_repeats=variant.head_repeats, max_level=variant.max_level,
      fusion=variant.fusion), task='detection')


for _name, _variant in _VARIANTS.items():
  _register(_name, _variant)
