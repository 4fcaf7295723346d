"""Building blocks shared by the model families (NHWC throughout)."""

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision/timm-style initialisers, so from-scratch training matches the
# reference recipes.
kaiming_normal_fan_out = jax.nn.initializers.variance_scaling(
    2.0, 'fan_out', 'normal')
kaiming_uniform_fan_in = jax.nn.initializers.variance_scaling(
    1.0 / 3.0, 'fan_in', 'uniform')  # torch's default conv/linear init.

# torch BatchNorm2d defaults: momentum 0.1 (Flax decay 0.9), eps 1e-5.
TORCH_BN_MOMENTUM = 0.9
TORCH_BN_EPSILON = 1e-5


def check_images(images: jax.Array, channels: int, model: str,
                 size: Sequence[int] | None = None) -> None:
  """Raises a ValueError unless `images` is [batch, height, width, channels].

  `size`, when given, is the only (height, width) the model accepts.
  """
  shape = tuple(images.shape)
  hw = f'{size[0]}, {size[1]}' if size else 'height, width'
  expected = f'[batch, {hw}, {channels}]'
  if (len(shape) != 4 or shape[-1] != channels or
      (size is not None and tuple(shape[1:3]) != tuple(size))):
    raise ValueError(
        f'{model} expects images of shape {expected} (NHWC), got {shape}.')


def symmetric_padding(kernel_size: int, dilation: int = 1) -> tuple:
  """torch-style `padding=(k-1)//2` on both sides of both spatial dims."""
  pad = dilation * (kernel_size - 1) // 2
  return ((pad, pad), (pad, pad))


DEPTHWISE_IMPLEMENTATIONS = ('conv', 'taps', 'pallas')
MAX_POOL_BACKWARDS = ('xla', 'taps')


def _check_implementation(kind: str, implementation: str,
                          choices: Sequence[str]) -> None:
  if implementation not in choices:
    raise ValueError(f'Unknown {kind} implementation {implementation!r}; '
                     f'choose one of {", ".join(choices)}.')


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0,
             ceil_mode: bool = False, backward: str = 'xla') -> jax.Array:
  """torch `MaxPool2d`: -inf padding, optional ceil-mode output size.

  `backward`: 'xla' (autodiff: select-and-scatter, which XLA:CPU lowers to
  an argmax reduce-window carrying index arrays plus a scatter) or 'taps'
  (each window's gradient to its first maximum, as select-and-scatter does,
  in one fused pass over the window's taps: 2.4-3x faster on CPU).
  """
  _check_implementation('max_pool_backward', backward, MAX_POOL_BACKWARDS)
  pads = []
  for size in x.shape[1:3]:
    high = padding
    if ceil_mode:
      out = math.ceil((size + 2 * padding - window) / stride) + 1
      # torch drops a last window that would start in the right padding.
      if (out - 1) * stride >= size + padding:
        out -= 1
      high = (out - 1) * stride + window - size - padding
    pads.append((padding, max(high, padding)))
  pool = _max_pool_taps if backward == 'taps' else _max_pool
  return pool(x, window, stride, tuple(pads))


def _max_pool(x: jax.Array, window: int, stride: int,
              pads: tuple) -> jax.Array:
  return jax.lax.reduce_window(
      x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
      ((0, 0), *pads, (0, 0)))


def _strided_window_slice(x: jax.Array, row: int, col: int, out_shape: tuple,
                          stride: int | Sequence[int]) -> jax.Array:
  """x[:, row::stride, col::stride] cut to the output's height and width."""
  n, out_h, out_w, channels = out_shape
  stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
  return jax.lax.slice(x, (0, row, col, 0),
                       (n, row + (out_h - 1) * stride_h + 1,
                        col + (out_w - 1) * stride_w + 1, channels),
                       (1, stride_h, stride_w, 1))


_max_pool_taps = jax.custom_vjp(_max_pool, nondiff_argnums=(1, 2, 3))


def _max_pool_taps_fwd(x, window, stride, pads):
  y = _max_pool(x, window, stride, pads)
  return y, (x, y)


def _max_pool_taps_bwd(window, stride, pads, residuals, grad):
  x, y = residuals
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  height, width = padded.shape[1:3]
  _, out_h, out_w, _ = y.shape
  unclaimed = jnp.ones(y.shape, bool)
  x_grad = jnp.zeros(padded.shape, accumulate)
  for i in range(window):  # Row-major, as select-and-scatter visits them.
    for j in range(window):
      claims = unclaimed & (_strided_window_slice(padded, i, j, y.shape,
                                                  stride) == y)
      unclaimed &= ~claims
      x_grad += jax.lax.pad(
          jnp.where(claims, grad, 0).astype(accumulate),
          jnp.zeros((), accumulate),
          ((0, 0, 0), (i, height - i - (out_h - 1) * stride - 1, stride - 1),
           (j, width - j - (out_w - 1) * stride - 1, stride - 1), (0, 0, 0)))
  (top, _), (left, _) = pads
  return (x_grad[:, top:top + x.shape[1], left:left + x.shape[2]]
          .astype(x.dtype),)


_max_pool_taps.defvjp(_max_pool_taps_fwd, _max_pool_taps_bwd)


class ConvAsMatmul:
  """`lax.conv_general_dilated` that computes as matmuls the convolutions
  XLA:CPU lowers slowly, and leaves the rest to XLA's convolution.

  For nn.Conv's `conv_general_dilated_cls` (built by `lowering.Lowering`).
  Only NHWC x HWIO convolutions without dilation or groups qualify:
  - `pointwise`: a 1x1 kernel without padding, as one [pixels, C_in] x
    [C_in, C_out] matmul of the (strided) pixels. XLA:CPU computes its
    backward pass as a convolution over transposed copies of the
    activations, 1.6-6.7x slower.
  - `small_output`: a kernel larger than its output in either dimension
    (a 3x3 on a 2x2 map, a stride-2 3x3 on a 4x4 one), as one im2col matmul
    over the kernel taps that touch the image (taps that see only padding
    are dropped). XLA:CPU runs such a convolution with its operands swapped,
    up to 45x slower forward and backward (benchmarks/RESULTS.md).
  """

  def __init__(self, pointwise: bool, small_output: bool):
    self.pointwise = pointwise
    self.small_output = small_output

  def __call__(self, lhs: jax.Array, rhs: jax.Array,
               window_strides: Sequence[int], padding: Any,
               lhs_dilation: Sequence[int] | None = None,
               rhs_dilation: Sequence[int] | None = None,
               dimension_numbers: Any = None, feature_group_count: int = 1,
               precision: Any = None) -> jax.Array:
    taps = None
    if _plain_nhwc_convolution(lhs, rhs, lhs_dilation, rhs_dilation,
                               dimension_numbers, feature_group_count):
      if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2],
                                          window_strides, padding)
      taps = self._taps_as_matmul(lhs.shape[1:3], rhs.shape[:2],
                                  tuple(window_strides), tuple(padding))
    if not taps:
      return jax.lax.conv_general_dilated(
          lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
          rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
          feature_group_count=feature_group_count, precision=precision)
    return _taps_matmul(lhs, rhs, taps, window_strides, padding, precision)

  def _taps_as_matmul(self, image, kernel, strides,
                      padding) -> tuple[range, range] | None:
    """The kernel rows and columns to multiply, or None for XLA's
    convolution."""
    out = [(size + low + high - k) // s + 1 for size, k, s, (low, high)
           in zip(image, kernel, strides, padding)]
    if min(out) < 1:
      return None
    if kernel == (1, 1) and all(p == 0 for pair in padding for p in pair):
      return (range(1), range(1)) if self.pointwise else None
    if not (self.small_output and any(o < k for o, k in zip(out, kernel))):
      return None
    # The taps that touch the image; a whole box of them, so the kernel is
    # sliced (one pad in the backward pass), not gathered tap by tap.
    touching = [
        [t for t in range(k) if any(0 <= t + s * o - low < size
                                    for o in range(n))]
        for size, k, s, (low, _), n in zip(image, kernel, strides, padding,
                                           out)]
    if not all(touching):
      return None
    return tuple(range(taps[0], taps[-1] + 1) for taps in touching)


def _plain_nhwc_convolution(lhs, rhs, lhs_dilation, rhs_dilation,
                            dimension_numbers, feature_group_count) -> bool:
  """NHWC x HWIO, without dilation or groups."""
  if lhs.ndim != 4 or feature_group_count != 1:
    return False
  if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
    return False
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                        ('NHWC', 'HWIO', 'NHWC'))
  return jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                        dimension_numbers) == nhwc


def _taps_matmul(x: jax.Array, kernel: jax.Array, taps: tuple[range, range],
                 strides: Sequence[int], padding: Sequence[tuple],
                 precision: Any) -> jax.Array:
  """The convolution as one [pixels, taps * C_in] x [taps * C_in, C_out]
  matmul of the strided input windows at the kernel's (rows, columns)
  `taps` (im2col)."""
  rows, cols = taps
  (kernel_h, kernel_w), (stride_h, stride_w) = kernel.shape[:2], strides
  if any(p for pair in padding for p in pair):
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out_shape = (x.shape[0], (x.shape[1] - kernel_h) // stride_h + 1,
               (x.shape[2] - kernel_w) // stride_w + 1, x.shape[3])
  patches = jnp.concatenate(
      [_strided_window_slice(x, row, col, out_shape, strides)
       for row in rows for col in cols], axis=-1)
  weights = kernel[rows.start:rows.stop, cols.start:cols.stop].reshape(
      -1, kernel.shape[-1])
  out = jax.lax.dot_general(patches.reshape(-1, patches.shape[-1]), weights,
                            (((1,), (0,)), ((), ())), precision=precision)
  return out.reshape(*out_shape[:3], kernel.shape[-1])


class DepthwiseConv(nn.Module):
  """Depthwise k x k convolution (one filter per channel, no bias).

  Parameters as `nn.Conv(C, (k, k), feature_group_count=C, use_bias=False)`:
  a kernel of shape (k, k, 1, C), so weights move freely between the two.
  `implementation`:
    'conv': XLA's grouped convolution (cuDNN on GPUs).
    'taps': the sum of the k*k shifted input slices, each scaled by its tap,
      and gradients computed the same way (the kernel's one tap at a time):
      elementwise work and reductions that XLA fuses, instead of a grouped
      convolution, whose backward pass is slow in XLA:CPU (the EfficientNet-B0
      train step is 3-5x faster with taps, benchmarks/RESULTS.md) and is
      reported slow on GPUs (jax-ml/jax#13800). Products are of inputs and
      taps rounded to `dtype`, summed in float32, as the convolution does.
    'pallas': Pallas (Triton) kernels for GPUs, forward and both gradients
      (`jaxcnn.kernels.depthwise_conv`); same rounding as 'taps'.
  """
  kernel_size: int
  strides: int = 1
  padding: Any = 'SAME'  # 'SAME' (TF) or ((top, bottom), (left, right)).
  implementation: str = 'conv'
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    implementation = self.implementation
    _check_implementation('depthwise', implementation,
                          DEPTHWISE_IMPLEMENTATIONS)
    k, stride, channels = self.kernel_size, self.strides, x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (k, k, 1, channels),
                        self.param_dtype).astype(self.dtype)
    x = x.astype(self.dtype)
    pads = (jax.lax.padtype_to_pads(x.shape[1:3], (k, k), (stride, stride),
                                    self.padding)
            if isinstance(self.padding, str) else self.padding)
    pads = tuple(map(tuple, pads))
    if implementation == 'conv':
      return jax.lax.conv_general_dilated(
          x, kernel, (stride, stride), pads,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          feature_group_count=channels)
    if implementation == 'pallas':
      return _depthwise_pallas(x, kernel, pads, stride)
    return _depthwise_taps(x, kernel, pads, stride)


def _depthwise_pallas(x: jax.Array, kernel: jax.Array, pads: tuple,
                      stride: int) -> jax.Array:
  if jax.default_backend() != 'gpu':
    raise ValueError(
        f"depthwise='pallas' is a GPU kernel (Pallas/Triton) and this "
        f"process runs on {jax.default_backend()}; use 'auto', 'taps' or "
        f"'conv' here.")
  from jaxcnn.kernels import depthwise_conv  # Imports Pallas only when used.
  return depthwise_conv.depthwise_conv(x, kernel, pads, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_taps(x: jax.Array, kernel: jax.Array, pads: tuple,
                    stride: int) -> jax.Array:
  """DepthwiseConv's 'taps': a sum of strided slices times kernel taps."""
  k = kernel.shape[0]
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  padded = jnp.pad(x, ((0, 0), *pads, (0, 0))).astype(accumulate)
  n, height, width, channels = padded.shape
  out_shape = (n, (height - k) // stride + 1, (width - k) // stride + 1,
               channels)
  kernel = kernel.astype(accumulate)
  out = sum(
      _strided_window_slice(padded, i, j, out_shape, stride) * kernel[i, j, 0]
      for i in range(k) for j in range(k))
  return out.astype(x.dtype)


def _depthwise_taps_fwd(x, kernel, pads, stride):
  return _depthwise_taps(x, kernel, pads, stride), (x, kernel)


def _depthwise_taps_bwd(pads, stride, residuals, grad):
  # Both gradients as sums of taps too. Autodiff's input gradient would add
  # k*k padded copies of the output gradient; this reads one.
  x, kernel = residuals
  k = kernel.shape[0]
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  grad = grad.astype(accumulate)
  (top, _), (left, _) = pads
  n, out_h, out_w, channels = grad.shape
  height, width = x.shape[1:3]
  # The output gradient spread to the input's stride and framed by k - 1:
  # tap (i, j) of the input gradient starts at (top + k-1-i, left + k-1-j).
  spread = jax.lax.pad(grad, jnp.zeros((), accumulate), (
      (0, 0, 0),
      (k - 1, height + top - (out_h - 1) * stride - 1, stride - 1),
      (k - 1, width + left - (out_w - 1) * stride - 1, stride - 1),
      (0, 0, 0)))
  taps = kernel.astype(accumulate)
  x_grad = sum(
      _strided_window_slice(spread, top + k - 1 - i, left + k - 1 - j,
                            x.shape, 1) * taps[i, j, 0]
      for i in range(k) for j in range(k))
  padded = jnp.pad(x, ((0, 0), *pads, (0, 0))).astype(accumulate)
  window = (n, (out_h - 1) * stride + 1, (out_w - 1) * stride + 1, channels)

  def tap_grad(index):
    # One tap at a time: the k*k products are never all in memory.
    tap = jax.lax.dynamic_slice(padded, (0, index // k, index % k, 0), window)
    return jnp.sum(tap[:, ::stride, ::stride] * grad, axis=(0, 1, 2))

  kernel_grad = jax.lax.map(tap_grad, jnp.arange(k * k))
  return (x_grad.astype(x.dtype),
          kernel_grad.reshape(kernel.shape).astype(kernel.dtype))


_depthwise_taps.defvjp(_depthwise_taps_fwd, _depthwise_taps_bwd)


class ImagesTooSmallError(ValueError):
  """The images leave empty feature maps (whose mean would be NaN)."""


def _check_not_empty(x: jax.Array) -> None:
  if 0 in x.shape[1:3]:
    raise ImagesTooSmallError(
        f'The images are too small for this model: its feature maps are '
        f'empty ({tuple(x.shape)}) before pooling.')


def adaptive_avg_pool(x: jax.Array, output_size: Sequence[int]) -> jax.Array:
  """torch `AdaptiveAvgPool2d`: bin i spans [floor(i*n/o), ceil((i+1)*n/o))."""
  _check_not_empty(x)
  height, width = x.shape[1:3]
  out_h, out_w = output_size
  if height % out_h == 0 and width % out_w == 0:
    n, _, _, c = x.shape
    x = x.reshape(n, out_h, height // out_h, out_w, width // out_w, c)
    return x.mean(axis=(2, 4))

  def bins(size, out):
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]

  rows = [
      jnp.stack([x[:, h0:h1, w0:w1].mean(axis=(1, 2))
                 for w0, w1 in bins(width, out_w)], axis=1)
      for h0, h1 in bins(height, out_h)
  ]
  return jnp.stack(rows, axis=1)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over the spatial dims, computed in at least float32."""
  _check_not_empty(x)
  return jnp.mean(x, axis=(1, 2), dtype=jnp.promote_types(x.dtype, jnp.float32)
                  ).astype(x.dtype)


def torch_bias_init(fan_in: int) -> jax.nn.initializers.Initializer:
  """torch's default conv/linear bias init, U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Stochastic depth: zeroes each sample with probability `rate`.

  Survivors are scaled by 1 / (1 - rate), so the expectation is unchanged.
  Call it only in training, on a residual branch before the addition.
  """
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))
