"""jaxcnn.compress: int8 quantisation, global magnitude pruning, sizes."""

import numpy as np
import pytest

from jaxcnn import compress


def _variables():
  """A conv, a depthwise conv and a dense layer (random, no zeros), with
  biases and BatchNorm statistics that compression leaves alone."""
  rng = np.random.default_rng(0)

  def normal(*shape):
    return rng.normal(size=shape).astype(np.float32)

  return {
      'params': {
          'conv': {'kernel': normal(3, 3, 2, 4), 'bias': normal(4)},
          'depthwise': {'kernel': normal(3, 3, 1, 4)},
          'bn': {'scale': normal(4), 'bias': normal(4)},
          'head': {'kernel': normal(4, 5), 'bias': normal(5)}},
      'batch_stats': {'bn': {'mean': normal(4), 'var': normal(4)}}}


def test_int8_is_symmetric_per_output_channel_within_half_a_step():
  kernel = _variables()['params']['conv']['kernel']
  kernel[..., 2] = 0.0  # An all-zero channel.
  values, scale = compress.quantize_int8(kernel)
  assert values.dtype == np.int8 and values.shape == kernel.shape
  assert scale.dtype == np.float32 and scale.shape == (4,)
  np.testing.assert_array_equal(
      scale, np.abs(kernel).max(axis=(0, 1, 2)) / np.float32(127))
  # Each channel's largest weight is +-127; the zero channel stays zero.
  np.testing.assert_array_equal(np.abs(values).max(axis=(0, 1, 2)),
                                [127, 127, 0, 127])
  error = np.abs(kernel - compress.dequantize(values, scale))
  assert np.all(error <= scale / 2 * (1 + 1e-6))
  assert error.max() > scale.max() / 4  # Not trivially exact.


def test_pruning_zeroes_exactly_the_fraction_of_smallest_kernel_weights():
  params = _variables()['params']
  kernels = np.concatenate([params[k]['kernel'].ravel()
                            for k in ('conv', 'depthwise', 'head')])
  assert kernels.size == 72 + 36 + 20 and np.all(kernels != 0)
  pruned = compress.prune(params, 0.25)
  kept = np.concatenate([pruned[k]['kernel'].ravel()
                         for k in ('conv', 'depthwise', 'head')])
  assert np.count_nonzero(kept == 0) == 32  # round(0.25 * 128).
  # Global: one threshold over all kernels, every weight above it kept.
  threshold = np.sort(np.abs(kernels))[32]
  np.testing.assert_array_equal(kept, np.where(np.abs(kernels) >= threshold,
                                               kernels, 0))
  for layer in ('conv', 'bn', 'head'):
    np.testing.assert_array_equal(pruned[layer]['bias'], params[layer]['bias'])
  assert compress.prune(params, 0.0) is params
  with pytest.raises(ValueError, match=r'^--prune=1.0: must be in \[0, 1\)'):
    compress.prune(params, 1.0)


def test_sizes_count_int8_kernels_scales_masks_and_float_rest():
  variables = _variables()
  floats = 4 * (72 + 4 + 36 + 4 + 4 + 20 + 5 + 4 + 4)
  assert compress.size_bytes(variables) == floats
  other = 4 * (4 + 4 + 4 + 5 + 4 + 4)  # Biases, BatchNorm.
  # int8: a byte per weight and a float32 scale per output channel.
  quantized = compress.compress(variables, 'int8')
  assert quantized.size_bytes == other + (72 + 36 + 20) + 4 * (4 + 4 + 5)
  assert quantized.zeroed_kernel_weights == 0
  assert quantized.kernel_weights == 128
  # Pruned: the kept values and one bit per weight (rounded up per kernel).
  pruned = compress.compress(variables, prune_fraction=0.5)
  assert pruned.zeroed_kernel_weights == 64
  kept = [np.count_nonzero(pruned.variables['params'][k]['kernel'])
          for k in ('conv', 'depthwise', 'head')]
  assert sum(kept) == 64
  assert pruned.size_bytes == other + 4 * 64 + (9 + 5 + 3)
  both = compress.compress(variables, 'int8', 0.5)
  kept_int8 = sum(
      np.count_nonzero(compress.quantize_int8(
          pruned.variables['params'][k]['kernel'])[0])
      for k in ('conv', 'depthwise', 'head'))
  assert both.size_bytes == other + kept_int8 + (9 + 5 + 3) + 4 * 13
  # Inference gets float kernels: the dequantised pruned weights.
  head = both.variables['params']['head']['kernel']
  assert head.dtype == np.float32
  np.testing.assert_array_equal(
      head, compress.dequantize(*compress.quantize_int8(
          pruned.variables['params']['head']['kernel'])))
  np.testing.assert_array_equal(both.variables['batch_stats']['bn']['var'],
                                variables['batch_stats']['bn']['var'])


def test_unknown_quantize_mode_names_the_flag():
  with pytest.raises(ValueError, match=r'^--quantize=int4: must be one of '
                     'int8.$'):
    compress.compress(_variables(), 'int4')
