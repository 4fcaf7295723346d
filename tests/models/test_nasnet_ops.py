"""Every op of the search space (jaxcnn.models.genotype.OPS) equals an
independent torch reference of its definition (TF SAME padding, slim's
borders, eval-mode BatchNorm with random statistics), at stride 1 and 2, on
an odd, non-square input, with and without the channel count changing.

NASNet-A's own ops are also checked inside whole networks against keras and
timm (tests/test_convert_nasnet.py); the others exist only in the search
space, so their definitions are what they are checked against.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxcnn.models import genotype
from jaxcnn.models import lowering
from jaxcnn.models import nasnet

_EPS = 1e-3
_IN, _OUT = 6, 8


def _t(array) -> torch.Tensor:
  return torch.from_numpy(np.asarray(array, np.float64))


def _same(x: torch.Tensor, kernel: tuple[int, int], stride: int,
          dilation: int = 1, fill: float = 0.0) -> torch.Tensor:
  """TF SAME padding of NCHW `x`: the extra pixel after, not before."""
  pads = []
  for size, k in zip(x.shape[2:], kernel):
    span = dilation * (k - 1) + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    pads.append((total // 2, total - total // 2))
  (top, bottom), (left, right) = pads
  return F.pad(x, (left, right, top, bottom), value=fill)


def _conv(x, kernel, stride=1, dilation=1, groups=1):
  """`kernel` HWIO (flax; depthwise: (k, k, 1, C))."""
  weight = _t(kernel).permute(3, 2, 0, 1)
  x = _same(x, weight.shape[2:], stride, dilation)
  return F.conv2d(x, weight, stride=stride, dilation=dilation, groups=groups)


def _bn(x, params, stats):
  shape = (1, -1, 1, 1)
  return ((x - _t(stats['mean']).view(shape)) /
          torch.sqrt(_t(stats['var']).view(shape) + _EPS) *
          _t(params['scale']).view(shape) + _t(params['bias']).view(shape))


def _relu_conv_bn(x, params, stats, stride, relu=True, dilation=1):
  if relu:
    x = F.relu(x)
  x = _conv(x, params['conv']['kernel'], stride, dilation)
  return _bn(x, params['bn'], stats['bn'])


def _pool(x, kind, k, stride):
  """slim's SAME pooling: max ignores the pads, average excludes them."""
  if kind == 'max':
    return F.max_pool2d(_same(x, (k, k), stride, fill=-np.inf), k, stride)
  ones = torch.ones_like(x[:, :1])
  sums = F.avg_pool2d(_same(x, (k, k), stride), k, stride) * k * k
  counts = F.avg_pool2d(_same(ones, (k, k), stride), k, stride) * k * k
  return sums / counts


def reference(op: str, x: torch.Tensor, params, stats,
              stride: int) -> torch.Tensor:
  """The op's definition (genotype.OPS) on NCHW `x`, reading the flax
  variables."""
  if op == 'id':
    if stride == 1 and x.shape[1] == _OUT:
      return x
    return _relu_conv_bn(x, params['project'], stats['project'], stride)
  if op.startswith('sep') or op == 'dilsep3':
    repeats, dilation = (2, 1) if op.startswith('sep') else (1, 2)
    for i in range(1, repeats + 1):
      x = F.relu(x)
      x = _conv(x, params[f'depthwise_{i}']['kernel'], stride, dilation,
                groups=x.shape[1])
      x = _conv(x, params[f'pointwise_{i}']['kernel'])
      x = _bn(x, params[f'bn_{i}'], stats[f'bn_{i}'])
      stride = 1
    return x
  if op[:3] in ('avg', 'max'):
    x = _pool(x, op[:3], int(op[3:]), stride)
    if x.shape[1] != _OUT:  # A 1x1 projection after pooling, no ReLU.
      x = _relu_conv_bn(x, params['project'], stats['project'], 1,
                        relu=False)
    return x
  if op in ('conv1x1', 'conv3x3', 'dilconv3'):
    return _relu_conv_bn(x, params['conv'], stats['conv'], stride,
                         dilation=2 if op == 'dilconv3' else 1)
  # conv1xk_kx1: ReLU, 1xk conv (strided), kx1 conv, BN.
  x = _conv(F.relu(x), params['conv_1']['kernel'], stride)
  x = _conv(x, params['conv_2']['kernel'])
  return _bn(x, params['bn'], stats['bn'])


def _random_stats(stats, rng):
  return jax.tree_util.tree_map_with_path(
      lambda path, a: (rng.uniform(0.5, 2.0, a.shape) if 'var' in str(path)
                       else rng.normal(0, 0.5, a.shape)).astype(np.float32),
      stats)


# Channels change at stride 1 (pools and id project), not at stride 2.
@pytest.mark.parametrize('channels, stride', [(_IN, 1), (_OUT, 2)])
@pytest.mark.parametrize('op', sorted(genotype.OPS))
def test_op_equals_its_definition(op, channels, stride):
  conv, depthwise, norm = lowering.tf_conv_layers(
      lowering.XLA, False, 0.9997, _EPS, jnp.float32, jnp.float32)
  module = nasnet.Op(op, _OUT, stride, 0.0, 'slim', conv, depthwise, norm)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 9, 11, channels)).astype(np.float32)
  variables = module.init(jax.random.key(0), images, False, 1.0)
  params = jax.tree.map(
      lambda a: a + rng.normal(0, 0.1, a.shape).astype(np.float32),
      variables.get('params', {}))
  stats = _random_stats(variables.get('batch_stats', {}), rng)
  got = module.apply({'params': params, 'batch_stats': stats}, images, False,
                     1.0)
  want = reference(op, _t(images).permute(0, 3, 1, 2), params, stats,
                   stride).permute(0, 2, 3, 1).numpy()
  size = -(-9 // stride), -(-11 // stride)
  assert got.shape == (2, *size, _OUT)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
