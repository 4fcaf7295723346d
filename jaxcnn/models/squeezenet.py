"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016), torchvision layout.

Module names follow torchvision's indices: features_0 is the stem conv,
features_N a Fire module (children squeeze, expand1x1, expand3x3) and `head`
is classifier.1, the final 1x1 conv.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models import layers
from jaxcnn.models import lowering as lowering_lib
from jaxcnn.models import registry

# torch `kaiming_uniform_` defaults (a=0): U(+-sqrt(6 / fan_in)).
_kaiming_uniform = jax.nn.initializers.variance_scaling(
    2.0, 'fan_in', 'uniform')


class Fire(nn.Module):
  """squeeze 1x1 -> ReLU -> concat[expand 1x1 -> ReLU, expand 3x3 -> ReLU]."""
  squeeze: int
  expand: int
  conv: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(self.conv(self.squeeze, (1, 1), padding=0, name='squeeze')(x))
    expand1x1 = self.conv(self.expand, (1, 1), padding=0, name='expand1x1')(x)
    expand3x3 = self.conv(self.expand, (3, 3),
                          padding=layers.symmetric_padding(3),
                          name='expand3x3')(x)
    return nn.relu(jnp.concatenate([expand1x1, expand3x3], axis=-1))


class SqueezeNet(nn.Module):
  """torchvision `squeezenet1_0` / `squeezenet1_1`.

  `fires` lists what follows the stem's max pool, in torchvision order:
  (squeeze, expand) for a Fire module, None for a 3x3/2 ceil-mode max pool.
  """
  num_classes: int
  stem_features: int
  stem_kernel: int
  fires: Sequence[tuple[int, int] | None]
  in_channels: int = 3
  dropout_rate: float = 0.5
  lowering: lowering_lib.Lowering = lowering_lib.XLA
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    layers.check_images(images, self.in_channels, 'SqueezeNet')
    conv = functools.partial(
        self.lowering.conv, kernel_init=_kaiming_uniform, dtype=self.dtype,
        param_dtype=self.param_dtype)
    x = conv(self.stem_features, (self.stem_kernel,) * 2, 2, padding=0,
             name='features_0')(images)
    max_pool = self.lowering.max_pool
    x = max_pool(nn.relu(x), 3, 2, ceil_mode=True)
    # torchvision's features.1 and .2 are the stem's ReLU and max pool.
    for index, fire in enumerate(self.fires, start=3):
      if fire is None:
        x = max_pool(x, 3, 2, ceil_mode=True)
      else:
        x = Fire(*fire, conv, name=f'features_{index}')(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = conv(self.num_classes, (1, 1), padding=0,
             kernel_init=jax.nn.initializers.normal(0.01), name='head')(x)
    return layers.global_avg_pool(nn.relu(x))


registry.register('squeezenet1_0', functools.partial(
    SqueezeNet, stem_features=96, stem_kernel=7,
    fires=((16, 64), (16, 64), (32, 128), None, (32, 128), (48, 192),
           (48, 192), (64, 256), None, (64, 256))))
registry.register('squeezenet1_1', functools.partial(
    SqueezeNet, stem_features=64, stem_kernel=3,
    fires=((16, 64), (16, 64), None, (32, 128), (32, 128), None, (48, 192),
           (48, 192), (64, 256), (64, 256))))
