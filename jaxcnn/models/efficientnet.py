"""EfficientNet-B0..B7 (Tan & Le, 2019), laid out like the TPU reference.

One B0 block table plus per-variant (width, depth, resolution, dropout)
coefficients build all eight variants, as in timm.

Porting notes: `padding='same'` is TF's asymmetric SAME padding (extra pixel
bottom/right at stride 2), for TF-origin weights such as timm
`tf_efficientnet_b*`; `padding='symmetric'` pads (k-1)//2 on both sides, for
torchvision / timm non-tf weights, which also want torch BatchNorm settings
(`bn_momentum=layers.TORCH_BN_MOMENTUM, bn_epsilon=layers.TORCH_BN_EPSILON`
for torchvision B0-B4).

Detection backbone: with `features_only=True` the model skips the head and
returns `{level: features}` for levels 1..5 (stride 2**level): the output of
the last block at each stride, i.e. stages 1, 2, 3, 5, 7 of the 1-indexed
table. EfficientDet's C3, C4, C5 are levels 3, 4, 5.
"""

import functools
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models import layers
from jaxcnn.models import lowering as lowering_lib
from jaxcnn.models import registry

ModuleDef = Callable[..., nn.Module]


class _Stage(NamedTuple):
  expand_ratio: int
  kernel_size: int
  stride: int
  out_channels: int
  repeats: int


# B0, before width/depth scaling. Block j of stage i is `blocks_{i}_{j}`.
_B0_STAGES = (
    _Stage(1, 3, 1, 16, 1),
    _Stage(6, 3, 2, 24, 2),
    _Stage(6, 5, 2, 40, 2),
    _Stage(6, 3, 2, 80, 3),
    _Stage(6, 5, 1, 112, 3),
    _Stage(6, 5, 2, 192, 4),
    _Stage(6, 3, 1, 320, 1),
)
_B0_STEM_CHANNELS = 32
_B0_HEAD_CHANNELS = 1280
_SE_RATIO = 0.25

# Registered name -> (width, depth, resolution, dropout).
_VARIANTS = {
    'efficientnet_b0': (1.0, 1.0, 224, 0.2),
    'efficientnet_b1': (1.0, 1.1, 240, 0.2),
    'efficientnet_b2': (1.1, 1.2, 260, 0.3),
    'efficientnet_b3': (1.2, 1.4, 300, 0.3),
    'efficientnet_b4': (1.4, 1.8, 380, 0.4),
    'efficientnet_b5': (1.6, 2.2, 456, 0.4),
    'efficientnet_b6': (1.8, 2.6, 528, 0.5),
    'efficientnet_b7': (2.0, 3.1, 600, 0.5),
}

# Default train/eval resolution of each registered variant.
IMAGE_SIZES = {name: v[2] for name, v in _VARIANTS.items()}

# Initialisers of the TPU reference. Convs: normal(0, sqrt(2 / fan_out)) with
# fan_out = kh * kw * out_channels.
conv_kernel_init = layers.kaiming_normal_fan_out
depthwise_kernel_init = lowering_lib.tf_depthwise_kernel_init
# Uniform(+-1 / sqrt(out_features)).
dense_kernel_init = jax.nn.initializers.variance_scaling(
    1.0 / 3.0, 'fan_out', 'uniform')


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Scales a channel count by `width`, rounded to a multiple of `divisor`."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:  # Never round down by more than 10%.
    rounded += divisor
  return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
  """Scales a stage's block count by `depth`, rounding up."""
  return int(math.ceil(depth * repeats))


class BlockConfig(NamedTuple):
  """One MBConv block of a scaled network."""
  stage: int
  index: int
  in_channels: int
  out_channels: int
  expand_ratio: int
  kernel_size: int
  stride: int
  drop_rate: float  # Stochastic depth rate of the residual branch.

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.in_channels == self.out_channels


def block_configs(width: float, depth: float,
                  drop_connect_rate: float) -> list[BlockConfig]:
  """All blocks of the network scaled by `width` and `depth`, in order.

  Block i of N has stochastic depth rate `drop_connect_rate * i / N`.
  """
  repeats = [round_repeats(s.repeats, depth) for s in _B0_STAGES]
  total = sum(repeats)
  configs = []
  in_channels = round_filters(_B0_STEM_CHANNELS, width)
  for stage_index, (stage, count) in enumerate(zip(_B0_STAGES, repeats)):
    out_channels = round_filters(stage.out_channels, width)
    for index in range(count):
      configs.append(BlockConfig(
          stage=stage_index,
          index=index,
          in_channels=in_channels,
          out_channels=out_channels,
          expand_ratio=stage.expand_ratio,
          kernel_size=stage.kernel_size,
          stride=stage.stride if index == 0 else 1,
          drop_rate=drop_connect_rate * len(configs) / total))
      in_channels = out_channels
  return configs


def _conv_padding(kernel_size: int, padding: str) -> Any:
  # Flax's 'SAME' is TF's SAME. At stride 1 both modes pad (k-1)//2.
  return 'SAME' if padding == 'same' else layers.symmetric_padding(kernel_size)


class MBConv(nn.Module):
  """Mobile inverted bottleneck with squeeze-excitation and drop path."""
  config: BlockConfig
  conv: ModuleDef
  depthwise: ModuleDef
  norm: ModuleDef
  padding: str  # 'same' or 'symmetric', as in EfficientNet.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    cfg = self.config
    inputs = x
    if cfg.expand_ratio != 1:
      x = self.conv(cfg.in_channels * cfg.expand_ratio, (1, 1),
                    name='expand_conv')(x)
      x = nn.swish(self.norm(name='expand_bn')(x))
    channels = x.shape[-1]
    x = self.depthwise(cfg.kernel_size, cfg.stride,
                       _conv_padding(cfg.kernel_size, self.padding),
                       name='dw_conv')(x)
    x = nn.swish(self.norm(name='dw_bn')(x))

    # The squeeze width follows the block input, not the expanded width.
    se = layers.global_avg_pool(x)[:, None, None, :]
    se = self.conv(max(1, int(cfg.in_channels * _SE_RATIO)), (1, 1),
                   use_bias=True, name='se_reduce')(se)
    se = self.conv(channels, (1, 1), use_bias=True,
                   name='se_expand')(nn.swish(se))
    x = x * nn.sigmoid(se)

    x = self.conv(cfg.out_channels, (1, 1), name='project_conv')(x)
    x = self.norm(name='project_bn')(x)
    if cfg.residual:
      if train and cfg.drop_rate > 0:
        x = layers.drop_path(x, cfg.drop_rate, self.make_rng('dropout'))
      x = x + inputs
    return x


class EfficientNet(nn.Module):
  """EfficientNet; the defaults give B0 with TF padding and BatchNorm."""
  num_classes: int
  width: float = 1.0
  depth: float = 1.0
  dropout_rate: float = 0.2
  drop_connect_rate: float = 0.2
  padding: str = 'same'  # 'same' (TF) or 'symmetric' (torch).
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  in_channels: int = 3
  features_only: bool = False
  lowering: lowering_lib.Lowering = lowering_lib.XLA
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> jax.Array | dict[int, jax.Array]:
    """Logits [batch, num_classes], or `{level: features}` if features_only."""
    layers.check_images(images, self.in_channels, 'EfficientNet')
    if self.padding not in ('same', 'symmetric'):
      raise ValueError(
          f"padding must be 'same' or 'symmetric', got {self.padding!r}.")
    conv, depthwise, norm = lowering_lib.tf_conv_layers(
        self.lowering, train, self.bn_momentum, self.bn_epsilon, self.dtype,
        self.param_dtype)

    x = conv(round_filters(_B0_STEM_CHANNELS, self.width), (3, 3), strides=2,
             padding=_conv_padding(3, self.padding), name='stem_conv')(images)
    x = nn.swish(norm(name='stem_bn')(x))

    stride = 2
    features = {}
    for cfg in block_configs(self.width, self.depth, self.drop_connect_rate):
      x = MBConv(cfg, conv, depthwise, norm, self.padding,
                 name=f'blocks_{cfg.stage}_{cfg.index}')(x, train)
      stride *= cfg.stride
      # Later blocks at the same stride overwrite earlier ones.
      features[int(math.log2(stride))] = x
    if self.features_only:
      return features

    x = conv(round_filters(_B0_HEAD_CHANNELS, self.width), (1, 1),
             name='head_conv')(x)
    x = nn.swish(norm(name='head_bn')(x))
    x = layers.global_avg_pool(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=dense_kernel_init,
                    dtype=self.dtype, param_dtype=self.param_dtype,
                    name='head')(x)


for _name, (_width, _depth, _, _dropout) in _VARIANTS.items():
  registry.register(_name, functools.partial(
      EfficientNet, width=_width, depth=_depth, dropout_rate=_dropout))
