"""Depthwise k x k convolution as Pallas kernels for GPUs (Triton).

`layers.DepthwiseConv(implementation='pallas')`. Three kernels, all reading
the channels (the contiguous NHWC axis) as the vector dimension:

- the output: each program computes one output row's tile of
  (columns x channels) as the sum of the k*k taps;
- the input gradient: the same kernel reading the output gradient, each
  tap where the stride puts it;
- the kernel gradient: each program sums the products of one kernel row's
  k taps over its share of the output rows in registers, and a small XLA
  sum adds the programs' partial sums (no atomics, so results are
  deterministic). The k programs of a share run side by side, so the rows
  they all read should be in the GPU's L2 cache.

The kernels read their operands as they are: a tap's rows and columns are
computed indices, masked where they fall on padding, between the stride's
steps or past the edges. So no padded, phase-split or spread copy is made
in XLA, and each layer moves only its operands and result through memory.
Products are summed in float32, as XLA's convolution does.
`interpret=True` runs the same kernels in the Pallas interpreter on any
backend (the tests do, on CPU).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

# Elements of the (columns x channels) tile a program computes: 8 a thread
# at 4 warps, so that a thread loads 8 bf16 channels (16 bytes) at once; at
# most this many channels per tile.
_TILE = 1024
_MAX_CHANNELS = 128
# Shares of the rows a kernel-gradient program sums, per kernel row: enough
# to fill a GPU's SMs a few times over.
_KERNEL_GRAD_PROGRAMS = 1024
# Triton's defaults (4 warps, 3 stages), named so that Pallas picks Triton,
# not Mosaic GPU (the default of some jax versions).
_COMPILER_PARAMS = plt.CompilerParams()


class _Taps(NamedTuple):
  """Where each tap reads its source, in rows and columns alike: for
  position p, index (p * scale + offset) / divisor, and zero unless that is
  a whole number inside the source. offsets[t] = (row offset, column
  offset)."""
  scale: int
  divisor: int
  offsets: tuple[tuple[int, int], ...]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv(x: jax.Array, kernel: jax.Array,
                   pads: tuple[tuple[int, int], tuple[int, int]],
                   stride: int, interpret: bool = False) -> jax.Array:
  """Depthwise convolution of NHWC `x` with a (k, k, 1, C) `kernel`.

  `pads` are ((top, bottom), (left, right)) zeros. The kernel is rounded
  to `x`'s dtype (as `DepthwiseConv` passes it); the result has `x`'s
  dtype, its gradients those of `x` and `kernel`.
  """
  out_hw = tuple((size + low + high - kernel.shape[0]) // stride + 1
                 for size, (low, high) in zip(x.shape[1:3], pads))
  return _correlate(x, _tap_weights(kernel, x.dtype),
                    _input_taps(kernel.shape[0], pads, stride), out_hw,
                    x.dtype, interpret)


def _depthwise_conv_fwd(x, kernel, pads, stride, interpret):
  return depthwise_conv(x, kernel, pads, stride, interpret), (x, kernel)


def _depthwise_conv_bwd(pads, stride, interpret, residuals, grad):
  x, kernel = residuals
  k = kernel.shape[0]
  (top, _), (left, _) = pads
  # Input pixel (h, w) met kernel tap (i, j) at output ((h + top - i) / s,
  # (w + left - j) / s), where that is a whole number.
  output_taps = _Taps(1, stride, tuple((top - i, left - j) for i in range(k)
                                       for j in range(k)))
  x_grad = _correlate(grad, _tap_weights(kernel, x.dtype), output_taps,
                      x.shape[1:3], x.dtype, interpret)
  kernel_grad = _kernel_grad(x, grad, k, pads, stride, interpret)
  return x_grad, kernel_grad.reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd)


def _tap_weights(kernel: jax.Array, dtype) -> jax.Array:
  """A (k, k, 1, C) kernel as [k*k, C] in `dtype`, tap (i, j) at i*k + j."""
  k, channels = kernel.shape[0], kernel.shape[-1]
  return kernel.reshape(k * k, channels).astype(dtype)


def _input_taps(k: int, pads, stride: int) -> _Taps:
  """Output pixel (h, w) reads input (h*s + i - top, w*s + j - left)."""
  (top, _), (left, _) = pads
  return _Taps(stride, 1, tuple((i - top, j - left) for i in range(k)
                                for j in range(k)))


def _source_index(position, scale: int, offset: int, divisor: int,
                  size: int):
  """A tap's index into a source axis of `size` for `position`, and whether
  it is there (see `_Taps`)."""
  numerator = position * scale + offset
  if divisor == 1:
    return numerator, (numerator >= 0) & (numerator < size)
  # Truncating division: a negative numerator is masked out anyway.
  index = jax.lax.div(numerator, jnp.int32(divisor))
  whole = jax.lax.rem(numerator, jnp.int32(divisor)) == 0
  return index, (numerator >= 0) & whole & (index < size)


def _load_tap(source_ref, taps: _Taps, t: int, image, h, columns, channels,
              mask, row_shift=0) -> jax.Array:
  """Tap t of `source_ref` for row h and `columns` of the result, float32,
  zero where the tap reads nothing or `mask` is false; `row_shift` is added
  to the tap's row offset. Indices, not slices: a slice starting before
  column 0 is shifted by the Pallas interpreter, not masked."""
  row_offset, column_offset = taps.offsets[t]
  _, source_h, source_w, _ = source_ref.shape
  row, row_ok = _source_index(h, taps.scale, row_offset + row_shift,
                              taps.divisor, source_h)
  cols, cols_ok = _source_index(columns, taps.scale, column_offset,
                                taps.divisor, source_w)
  mask &= row_ok & cols_ok[:, None]
  return plt.load(source_ref.at[image, row, cols[:, None], channels[None, :]],
                  mask=mask, other=0).astype(jnp.float32)


def _tile(width: int, channels: int, elements: int) -> tuple[int, int]:
  """Power-of-two (columns, channels) tile of at most `elements` (or one
  column): Triton's blocks are powers of two; the edges are masked."""
  tile_channels = min(_MAX_CHANNELS, pl.next_power_of_2(channels))
  columns = max(1, elements // tile_channels)
  tile_width = min(pl.next_power_of_2(width), 1 << (columns.bit_length() - 1))
  return tile_width, tile_channels


def _correlate(source: jax.Array, weights: jax.Array, taps: _Taps,
               out_hw: tuple[int, int], out_dtype, interpret: bool
               ) -> jax.Array:
  """out[n, h, w, c] = sum over taps t of source[n, tap t's row for h,
  tap t's column for w, c] * weights[t, c] (see `_Taps`)."""
  n, channels = source.shape[0], source.shape[-1]
  out_h, out_w = out_hw
  tile_w, tile_c = _tile(out_w, channels, _TILE)

  def kernel(source_ref, weights_ref, out_ref):
    row, col_block, chan_block = (pl.program_id(0), pl.program_id(1),
                                  pl.program_id(2))
    image, h = row // out_h, row % out_h
    col0, chan0 = col_block * tile_w, chan_block * tile_c
    columns = col0 + jnp.arange(tile_w)
    chans = chan0 + jnp.arange(tile_c)
    chan_mask = (chans < channels)[None, :]
    out = jnp.zeros((tile_w, tile_c), jnp.float32)
    for t in range(len(taps.offsets)):
      # Loaded already broadcast over the columns, in the source's dtype:
      # Triton then gives the weights the source tile's register layout
      # (a vector of channels would be converted through shared memory at
      # every tap).
      weight = plt.load(
          weights_ref.at[jnp.full((tile_w, 1), t, jnp.int32),
                         chans[None, :]],
          mask=jnp.broadcast_to(chan_mask, (tile_w, tile_c)), other=0)
      out += _load_tap(source_ref, taps, t, image, h, columns, chans,
                       chan_mask) * weight.astype(jnp.float32)
    plt.store(out_ref.at[image, h, pl.ds(col0, tile_w), pl.ds(chan0, tile_c)],
              out.astype(out_ref.dtype),
              mask=(columns < out_w)[:, None] & chan_mask)

  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((n, *out_hw, channels), out_dtype),
      grid=(n * out_h, pl.cdiv(out_w, tile_w), pl.cdiv(channels, tile_c)),
      compiler_params=_COMPILER_PARAMS, interpret=interpret,
      name='depthwise_conv')(source, weights)


def _kernel_grad(x: jax.Array, grad: jax.Array, k: int, pads, stride: int,
                 interpret: bool) -> jax.Array:
  """[k, k, C] float32: sum over n, h, w of x[n, h*s + i - top, w*s + j -
  left, c] * grad[n, h, w, c] for tap (i, j)."""
  n, out_h, out_w, channels = grad.shape
  # Kernel row 0's taps; a program adds its kernel row to their rows.
  taps = _input_taps(k, pads, stride)
  row_taps = taps._replace(offsets=taps.offsets[:k])
  tile_w, tile_c = _tile(out_w, channels, _TILE)
  chan_blocks, col_blocks = pl.cdiv(channels, tile_c), pl.cdiv(out_w, tile_w)
  rows = n * out_h
  programs = max(1, min(rows, _KERNEL_GRAD_PROGRAMS // chan_blocks))
  rows_per_program = pl.cdiv(rows, programs)

  def kernel(x_ref, grad_ref, out_ref):
    kernel_row, chan_block, program = (pl.program_id(0), pl.program_id(1),
                                       pl.program_id(2))
    chan0 = chan_block * tile_c
    chans = chan0 + jnp.arange(tile_c)
    chan_mask = (chans < channels)[None, :]

    def add_row(r, sums):
      row = program * rows_per_program + r
      image, h = row // out_h, row % out_h

      def add_tile(col_block, sums):
        columns = col_block * tile_w + jnp.arange(tile_w)
        # The last program's rows may run past the end.
        in_grad = ((columns < out_w) & (row < rows))[:, None] & chan_mask
        g = plt.load(grad_ref.at[image, h, pl.ds(col_block * tile_w, tile_w),
                                 pl.ds(chan0, tile_c)], mask=in_grad, other=0)
        g = g.astype(jnp.float32)
        return tuple(
            total + g * _load_tap(x_ref, row_taps, j, image, h, columns,
                                  chans, in_grad, row_shift=kernel_row)
            for j, total in enumerate(sums))

      return jax.lax.fori_loop(0, col_blocks, add_tile, sums)

    zeros = jnp.zeros((tile_w, tile_c), jnp.float32)
    sums = jax.lax.fori_loop(0, rows_per_program, add_row, (zeros,) * k)
    for j, total in enumerate(sums):
      # jnp.int32: the interpreter cannot index with a plain Python int.
      plt.store(out_ref.at[program, kernel_row, jnp.int32(j),
                           pl.ds(chan0, tile_c)],
                jnp.sum(total, axis=0), mask=chans < channels)

  partial_sums = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((programs, k, k, channels), jnp.float32),
      grid=(k, chan_blocks, programs), compiler_params=_COMPILER_PARAMS,
      interpret=interpret, name='depthwise_kernel_grad')(x, grad)
  return partial_sums.sum(axis=0)
