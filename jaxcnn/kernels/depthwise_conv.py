"""Depthwise k x k convolution as Pallas kernels for GPUs (Triton).

`layers.DepthwiseConv(implementation='pallas')`. Three kernels, all reading
the channels (the contiguous NHWC axis) as the vector dimension:

- the output: each program computes one output row's tile of
  (columns x channels) as the sum of the k*k taps, each a contiguous load;
- the input gradient: the same kernel over the output gradient spread to
  the input's stride (the 'taps' backward pass does the same in XLA);
- the kernel gradient: each program sums the k*k products of its share of
  the rows in registers, one pass over input and output gradient, and a
  small XLA sum adds the programs' partial sums (no atomics, so results are
  deterministic).

Strided convolutions read their input split into its stride phases
(`_phases`), so every load is contiguous. Products are summed in float32,
as XLA's convolution does. `interpret=True` runs the same kernels in the
Pallas interpreter on any backend (the tests do, on CPU).
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from jaxcnn.models import layers

# Elements of the (columns x channels) tile one output program computes;
# float32 partial sums a kernel-gradient program holds for all its taps
# together (32 registers a thread at 4 warps); at most this many channels
# per tile.
_OUTPUT_TILE = 1024
_KERNEL_GRAD_SUMS = 4096
_MAX_CHANNELS = 128
# The kernel gradient's programs (each sums a share of the rows): enough to
# fill a GPU's SMs a few times over.
_KERNEL_GRAD_PROGRAMS = 1024
# Triton's defaults (4 warps, 3 stages), named so that Pallas picks Triton,
# not Mosaic GPU (the default of some jax versions).
_COMPILER_PARAMS = plt.CompilerParams()

# A tap of the source: (stride phase, row offset, column offset).
Offsets = tuple[tuple[int, int, int], ...]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv(x: jax.Array, kernel: jax.Array,
                   pads: tuple[tuple[int, int], tuple[int, int]],
                   stride: int, interpret: bool = False) -> jax.Array:
  """Depthwise convolution of NHWC `x` with a (k, k, 1, C) `kernel`.

  `pads` are ((top, bottom), (left, right)) zeros; the result has `x`'s
  dtype, its gradients those of `x` and `kernel`.
  """
  k = kernel.shape[0]
  out_hw = _output_hw(x.shape, k, pads, stride)
  return _correlate(_phases(x, pads, stride), _tap_weights(kernel),
                    _tap_offsets(k, stride), out_hw, x.dtype, interpret)


def _depthwise_conv_fwd(x, kernel, pads, stride, interpret):
  return depthwise_conv(x, kernel, pads, stride, interpret), (x, kernel)


def _depthwise_conv_bwd(pads, stride, interpret, residuals, grad):
  x, kernel = residuals
  k = kernel.shape[0]
  (top, _), (left, _) = pads
  spread = layers.spread_output_grad(grad, x.shape[1:3], pads, k, stride)
  input_offsets = tuple((0, top + k - 1 - i, left + k - 1 - j)
                        for i in range(k) for j in range(k))
  x_grad = _correlate(spread[None], _tap_weights(kernel), input_offsets,
                      x.shape[1:3], x.dtype, interpret)
  # The phases again (one copy): kept as a residual they would double the
  # memory held for x, whose exact shape the input gradient needs.
  kernel_grad = _tap_sums(_phases(x, pads, stride), grad,
                          _tap_offsets(k, stride), interpret)
  return x_grad, kernel_grad.reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd)


def _tap_weights(kernel: jax.Array) -> jax.Array:
  """A (k, k, 1, C) kernel as [k*k, C] float32, tap (i, j) at i*k + j."""
  k, channels = kernel.shape[0], kernel.shape[-1]
  return kernel.reshape(k * k, channels).astype(jnp.float32)


def _output_hw(shape: tuple, k: int, pads, stride: int) -> tuple[int, int]:
  return tuple((size + low + high - k) // stride + 1
               for size, (low, high) in zip(shape[1:3], pads))


def _phases(x: jax.Array, pads, stride: int) -> jax.Array:
  """`x` zero-padded and split by `stride`: [s*s, N, H', W', C], where phase
  a*s + b holds padded[:, a::s, b::s]. For stride 1, just the padding."""
  (top, bottom), (left, right) = pads
  n, height, width, channels = x.shape
  rows = -(-(height + top + bottom) // stride)
  cols = -(-(width + left + right) // stride)
  padded = jnp.pad(x, ((0, 0), (top, rows * stride - height - top),
                       (left, cols * stride - width - left), (0, 0)))
  phases = padded.reshape(n, rows, stride, cols, stride, channels)
  return phases.transpose(2, 4, 0, 1, 3, 5).reshape(
      stride * stride, n, rows, cols, channels)


def _tap_offsets(k: int, stride: int) -> Offsets:
  """Where tap (i, j) of a strided convolution reads `_phases`' output."""
  return tuple(((i % stride) * stride + j % stride, i // stride, j // stride)
               for i in range(k) for j in range(k))


def _tile(width: int, channels: int, elements: int) -> tuple[int, int]:
  """Power-of-two (columns, channels) tile of at most `elements` (or one
  column): Triton's blocks are powers of two; the edges are masked."""
  tile_channels = min(_MAX_CHANNELS, pl.next_power_of_2(channels))
  columns = max(1, elements // tile_channels)
  tile_width = min(pl.next_power_of_2(width), 1 << (columns.bit_length() - 1))
  return tile_width, tile_channels


def _correlate(source: jax.Array, taps: jax.Array, offsets: Offsets,
               out_hw: tuple[int, int], out_dtype, interpret: bool
               ) -> jax.Array:
  """out[n, h, w, c] = sum_t source[p_t, n, h + dy_t, w + dx_t, c] *
  taps[t, c], for offsets[t] = (p_t, dy_t, dx_t)."""
  n, channels = source.shape[1], source.shape[-1]
  out_h, out_w = out_hw
  tile_w, tile_c = _tile(out_w, channels, _OUTPUT_TILE)

  def kernel(source_ref, taps_ref, out_ref):
    row, col_block, chan_block = (pl.program_id(0), pl.program_id(1),
                                  pl.program_id(2))
    image, h = row // out_h, row % out_h
    col0, chan0 = col_block * tile_w, chan_block * tile_c
    chan_mask = (chan0 + jnp.arange(tile_c) < channels)[None, :]
    mask = (col0 + jnp.arange(tile_w) < out_w)[:, None] & chan_mask
    out = jnp.zeros((tile_w, tile_c), jnp.float32)
    for t, (phase, dy, dx) in enumerate(offsets):
      # jnp.int32: the interpreter cannot index with a plain Python int.
      pixels = plt.load(source_ref.at[jnp.int32(phase), image, h + dy,
                                      pl.ds(col0 + dx, tile_w),
                                      pl.ds(chan0, tile_c)],
                        mask=mask, other=0)
      tap = plt.load(taps_ref.at[pl.ds(t, 1), pl.ds(chan0, tile_c)],
                     mask=chan_mask, other=0)
      out += pixels.astype(jnp.float32) * tap
    plt.store(out_ref.at[image, h, pl.ds(col0, tile_w), pl.ds(chan0, tile_c)],
              out.astype(out_ref.dtype), mask=mask)

  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((n, *out_hw, channels), out_dtype),
      grid=(n * out_h, pl.cdiv(out_w, tile_w), pl.cdiv(channels, tile_c)),
      compiler_params=_COMPILER_PARAMS, interpret=interpret,
      name='depthwise_conv')(source, taps)


def _tap_sums(source: jax.Array, grad: jax.Array, offsets: Offsets,
              interpret: bool) -> jax.Array:
  """[T, C] float32: sum over n, h, w of source[p_t, n, h + dy_t, w + dx_t,
  c] * grad[n, h, w, c] (the kernel gradient)."""
  n, out_h, out_w, channels = grad.shape
  tile_w, tile_c = _tile(out_w, channels, _KERNEL_GRAD_SUMS // len(offsets))
  chan_blocks, col_blocks = pl.cdiv(channels, tile_c), pl.cdiv(out_w, tile_w)
  rows = n * out_h
  programs = max(1, min(rows, _KERNEL_GRAD_PROGRAMS // chan_blocks))
  rows_per_program = pl.cdiv(rows, programs)

  def kernel(source_ref, grad_ref, out_ref):
    chan_block, program = pl.program_id(0), pl.program_id(1)
    chan0 = chan_block * tile_c
    chan_mask = (chan0 + jnp.arange(tile_c) < channels)[None, :]

    def add_row(r, sums):
      row = program * rows_per_program + r
      image, h = row // out_h, row % out_h

      def add_tile(col_block, sums):
        col0 = col_block * tile_w
        mask = ((col0 + jnp.arange(tile_w) < out_w) & (row < rows))[:, None]
        mask &= chan_mask
        g = plt.load(grad_ref.at[image, h, pl.ds(col0, tile_w),
                                 pl.ds(chan0, tile_c)], mask=mask, other=0)
        g = g.astype(jnp.float32)
        return tuple(
            total + g * plt.load(
                source_ref.at[jnp.int32(phase), image, h + dy,
                              pl.ds(col0 + dx, tile_w), pl.ds(chan0, tile_c)],
                mask=mask, other=0).astype(jnp.float32)
            for total, (phase, dy, dx) in zip(sums, offsets))

      return jax.lax.fori_loop(0, col_blocks, add_tile, sums)

    zeros = jnp.zeros((tile_w, tile_c), jnp.float32)
    sums = jax.lax.fori_loop(0, rows_per_program, add_row,
                             (zeros,) * len(offsets))
    for t, total in enumerate(sums):
      plt.store(out_ref.at[program, pl.ds(t, 1), pl.ds(chan0, tile_c)],
                jnp.sum(total, axis=0, keepdims=True), mask=chan_mask)

  partial_sums = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((programs, len(offsets), channels),
                                     jnp.float32),
      grid=(chan_blocks, programs), compiler_params=_COMPILER_PARAMS,
      interpret=interpret, name='depthwise_kernel_grad')(source, grad)
  return partial_sums.sum(axis=0)
