"""Pooling helpers against hand-computed torch semantics."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import layers


def _grid(height, width):
  """[1, height, width, 1] image whose pixel (h, w) is 10 * h + w."""
  h, w = np.mgrid[:height, :width]
  return jnp.asarray((10 * h + w)[None, :, :, None], jnp.float32)


@pytest.mark.parametrize('size, window, stride, padding, ceil_mode, expected', [
    (55, 3, 2, 0, False, 27),
    (55, 3, 2, 0, True, 27),
    (13, 3, 2, 0, True, 6),
    (14, 3, 2, 0, False, 6),
    (14, 3, 2, 0, True, 7),
    (54, 3, 2, 0, True, 27),  # SqueezeNet 1.0 at 224: 54 -> 27, not 26.
    (6, 3, 2, 0, True, 3),
    (6, 3, 2, 0, False, 2),
    (112, 3, 2, 1, False, 56),  # ResNet stem.
    # ceil mode would give 4, but torch drops a window starting in padding.
    (5, 2, 2, 1, True, 3),
])
def test_max_pool_output_size(size, window, stride, padding, ceil_mode,
                              expected):
  y = layers.max_pool(jnp.zeros((2, size, size, 3)), window, stride, padding,
                      ceil_mode)
  assert y.shape == (2, expected, expected, 3)


def test_max_pool_ceil_mode_values():
  # 6x6 grid, 3x3/2 ceil windows cover rows/cols [0,2], [2,4], [4,5]; the grid
  # increases along both axes, so each max is the window's bottom-right pixel.
  y = layers.max_pool(_grid(6, 6), 3, 2, ceil_mode=True)
  np.testing.assert_array_equal(
      y[0, :, :, 0], [[22, 24, 25], [42, 44, 45], [52, 54, 55]])


def test_max_pool_dropped_window_values():
  x = jnp.asarray([1., 5., 2., 3., 4.]).reshape(1, 1, 5, 1)
  y = layers.max_pool(x, 2, 2, padding=1, ceil_mode=True)
  # Width windows [-1, 0], [1, 2], [3, 4]; height 1 -> 1 window [-1, 0].
  np.testing.assert_array_equal(y[0, 0, :, 0], [1., 5., 4.])


def test_max_pool_pads_with_minus_infinity():
  x = -1.0 - _grid(4, 4)  # All negative: zero padding would leak zeros.
  y = layers.max_pool(x, 3, 2, padding=1)
  np.testing.assert_array_equal(y[0, :, :, 0], [[-1, -2], [-11, -12]])


def test_adaptive_avg_pool_non_divisible():
  # Height 5 -> 3 bins [0,2) [1,4) [3,5): mean rows 0.5, 2, 3.5.
  # Width 7 -> 2 bins [0,4) [3,7): mean cols 1.5, 4.5.
  y = layers.adaptive_avg_pool(_grid(5, 7), (3, 2))
  np.testing.assert_allclose(
      y[0, :, :, 0], [[6.5, 9.5], [21.5, 24.5], [36.5, 39.5]], rtol=1e-6)


def test_adaptive_avg_pool_divisible_and_upsampling():
  # 4x4 -> 2x2: plain 2x2 means.
  y = layers.adaptive_avg_pool(_grid(4, 4), (2, 2))
  np.testing.assert_allclose(y[0, :, :, 0], [[5.5, 7.5], [25.5, 27.5]])
  # 2x1 -> 3x2: height bins [0,1) [0,2) [1,2); width 1 pixel repeated.
  y = layers.adaptive_avg_pool(_grid(2, 1), (3, 2))
  np.testing.assert_allclose(y[0, :, :, 0], [[0, 0], [5, 5], [10, 10]])
  # 1x1 -> 6x6 (AlexNet on small inputs) replicates the pixel.
  x = jnp.arange(4.).reshape(1, 1, 1, 4)
  y = layers.adaptive_avg_pool(x, (6, 6))
  np.testing.assert_array_equal(y, jnp.broadcast_to(x, (1, 6, 6, 4)))


def test_global_avg_pool_keeps_dtype():
  x = jnp.ones((2, 3, 5, 4), jnp.bfloat16)
  y = layers.global_avg_pool(x)
  assert y.shape == (2, 4) and y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(y, 1)


def test_pooling_refuses_empty_feature_maps():
  empty = jnp.zeros((2, 0, 3, 8))
  for pool in (layers.global_avg_pool,
               lambda x: layers.adaptive_avg_pool(x, (6, 6))):
    with pytest.raises(layers.ImagesTooSmallError,
                       match=r'feature maps are empty \(\(2, 0, 3, 8\)\)'):
      pool(empty)
