"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, 32x32x1 input.

Module names: conv1..conv3 (5x5 VALID convs 6/16/120), fc1 (84), head.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models import layers
from jaxcnn.models import lowering as lowering_lib
from jaxcnn.models import registry


class LeNet5(nn.Module):
  """conv6-pool-conv16-pool-conv120-fc84-head; 61,706 params at 10 classes."""
  num_classes: int
  in_channels: int = 1
  lowering: lowering_lib.Lowering = lowering_lib.XLA
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    layers.check_images(images, self.in_channels, 'LeNet-5', size=(32, 32))
    del train  # No dropout or BatchNorm.
    # torch's default Conv2d/Linear init.
    conv = functools.partial(
        self.lowering.conv, kernel_size=(5, 5), padding='VALID',
        kernel_init=layers.kaiming_uniform_fan_in, dtype=self.dtype,
        param_dtype=self.param_dtype)
    dense = functools.partial(
        nn.Dense, kernel_init=layers.kaiming_uniform_fan_in, dtype=self.dtype,
        param_dtype=self.param_dtype)
    x = images
    for i, features in enumerate((6, 16, 120)):
      if i:
        x = self.lowering.max_pool(x, 2, 2)
      x = conv(features, bias_init=layers.torch_bias_init(x.shape[-1] * 25),
               name=f'conv{i + 1}')(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = dense(84, bias_init=layers.torch_bias_init(x.shape[-1]), name='fc1')(x)
    x = nn.relu(x)
    return dense(self.num_classes, bias_init=layers.torch_bias_init(84),
                 name='head')(x)


registry.register('lenet5', LeNet5)
