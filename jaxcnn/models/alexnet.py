"""AlexNet, torchvision's single-tower "one weird trick" variant.

Module names follow torchvision's indices: features_{0,3,6,8,10} are the
convs, classifier_{1,4} the hidden FCs and `head` is classifier.6. The flatten
before classifier_1 is H,W,C (NHWC), so torch's FC6 rows (C,H,W) must be
permuted on import.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models import layers
from jaxcnn.models import lowering as lowering_lib
from jaxcnn.models import registry

# (torchvision index, features, kernel, stride, padding, max pool after).
_FEATURES = (
    (0, 64, 11, 4, 2, True),
    (3, 192, 5, 1, 2, True),
    (6, 384, 3, 1, 1, False),
    (8, 256, 3, 1, 1, False),
    (10, 256, 3, 1, 1, True),
)


class AlexNet(nn.Module):
  """torchvision `alexnet`; inputs of at least 63x63."""
  num_classes: int
  in_channels: int = 3
  dropout_rate: float = 0.5
  lowering: lowering_lib.Lowering = lowering_lib.XLA
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    layers.check_images(images, self.in_channels, 'AlexNet')
    # torch's default Conv2d/Linear init.
    conv = functools.partial(
        self.lowering.conv, kernel_init=layers.kaiming_uniform_fan_in,
        dtype=self.dtype, param_dtype=self.param_dtype)
    dense = functools.partial(
        nn.Dense, kernel_init=layers.kaiming_uniform_fan_in, dtype=self.dtype,
        param_dtype=self.param_dtype)
    x = images
    for index, features, kernel, stride, padding, pool in _FEATURES:
      x = conv(features, (kernel, kernel), stride, padding=padding,
               bias_init=layers.torch_bias_init(x.shape[-1] * kernel**2),
               name=f'features_{index}')(x)
      x = nn.relu(x)
      if pool:
        x = self.lowering.max_pool(x, 3, 2)
    x = layers.adaptive_avg_pool(x, (6, 6))
    x = x.reshape(x.shape[0], -1)
    for index in (1, 4):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = dense(4096, bias_init=layers.torch_bias_init(x.shape[-1]),
                name=f'classifier_{index}')(x)
      x = nn.relu(x)
    return dense(self.num_classes, bias_init=layers.torch_bias_init(4096),
                 name='head')(x)


registry.register('alexnet', AlexNet)
