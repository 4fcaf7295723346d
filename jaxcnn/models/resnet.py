"""ResNet-18/34/50/101/152 (He et al. 2015), torchvision v1.5 layout.

Module names mirror torchvision's state_dict: conv1, bn1, layer{S}_{B} (with
conv1/bn1/conv2/bn2[/conv3/bn3] and downsample_conv/downsample_bn for
downsample.0/.1) and `head` for fc.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models import layers
from jaxcnn.models import lowering as lowering_lib
from jaxcnn.models import registry

ModuleDef = Callable[..., nn.Module]


def _conv_bn(conv: ModuleDef, norm: ModuleDef, x: jax.Array, features: int,
             kernel: int, strides: int, name: str,
             zero_init: bool = False) -> jax.Array:
  """Conv `name` (padding (k-1)//2) followed by its BatchNorm.

  BN names swap the conv's `conv` prefix for `bn`: conv2 -> bn2,
  downsample_conv -> downsample_bn.
  """
  x = conv(features, (kernel, kernel), strides,
           padding=layers.symmetric_padding(kernel), name=name)(x)
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  return norm(scale_init=scale_init, name=name.replace('conv', 'bn'))(x)


def _shortcut(conv_bn: Callable[..., jax.Array], x: jax.Array, y: jax.Array,
              strides: int) -> jax.Array:
  """Identity, or a 1x1 conv + BN projection when the block changes shape."""
  if strides == 1 and x.shape[-1] == y.shape[-1]:
    return x
  return conv_bn(x, y.shape[-1], 1, strides, 'downsample_conv')


class _Block(nn.Module):
  """Fields shared by both residual blocks."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  zero_init_residual: bool = False


class BasicBlock(_Block):
  """3x3 -> 3x3 residual block of ResNet-18/34."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv_bn = functools.partial(_conv_bn, self.conv, self.norm)
    y = nn.relu(conv_bn(x, self.features, 3, self.strides, 'conv1'))
    y = conv_bn(y, self.features, 3, 1, 'conv2', self.zero_init_residual)
    return nn.relu(y + _shortcut(conv_bn, x, y, self.strides))


class Bottleneck(_Block):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 x4 residual block of ResNet-50+."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv_bn = functools.partial(_conv_bn, self.conv, self.norm)
    y = nn.relu(conv_bn(x, self.features, 1, 1, 'conv1'))
    y = nn.relu(conv_bn(y, self.features, 3, self.strides, 'conv2'))
    y = conv_bn(y, 4 * self.features, 1, 1, 'conv3',
                self.zero_init_residual)
    return nn.relu(y + _shortcut(conv_bn, x, y, self.strides))


class ResNet(nn.Module):
  """torchvision ResNet; `stage_sizes` blocks per stage of 64/128/256/512."""
  num_classes: int
  block_cls: ModuleDef
  stage_sizes: Sequence[int]
  in_channels: int = 3
  zero_init_residual: bool = False
  lowering: lowering_lib.Lowering = lowering_lib.XLA
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    layers.check_images(images, self.in_channels, 'ResNet')
    conv = functools.partial(
        self.lowering.conv, use_bias=False,
        kernel_init=layers.kaiming_normal_fan_out, dtype=self.dtype,
        param_dtype=self.param_dtype)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train,
        momentum=layers.TORCH_BN_MOMENTUM, epsilon=layers.TORCH_BN_EPSILON,
        dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.relu(_conv_bn(conv, norm, images, 64, 7, 2, 'conv1'))
    x = self.lowering.max_pool(x, 3, 2, padding=1)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        x = self.block_cls(
            features=64 * 2**stage, strides=2 if stage and not block else 1,
            conv=conv, norm=norm, zero_init_residual=self.zero_init_residual,
            name=f'layer{stage + 1}_{block}')(x)
    x = layers.global_avg_pool(x)
    # torch's default Linear init.
    return nn.Dense(
        self.num_classes, kernel_init=layers.kaiming_uniform_fan_in,
        bias_init=layers.torch_bias_init(x.shape[-1]), dtype=self.dtype,
        param_dtype=self.param_dtype, name='head')(x)


for _name, _block, _sizes in (
    ('resnet18', BasicBlock, (2, 2, 2, 2)),
    ('resnet34', BasicBlock, (3, 4, 6, 3)),
    ('resnet50', Bottleneck, (3, 4, 6, 3)),
    ('resnet101', Bottleneck, (3, 4, 23, 3)),
    ('resnet152', Bottleneck, (3, 8, 36, 3)),
):
  registry.register(
      _name, functools.partial(ResNet, block_cls=_block, stage_sizes=_sizes))
