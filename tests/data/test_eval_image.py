"""data.eval_image: the eval preprocessing of image files without
TensorFlow, against the pipeline's TensorFlow ops."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from jaxcnn.data import eval_image
from jaxcnn.data import preprocess


def _smooth_image(height: int, width: int) -> np.ndarray:
  y, x = np.mgrid[0:height, 0:width]
  return np.stack([128 + 100 * np.sin(x / 9.0), 128 + 100 * np.cos(y / 7.0),
                   128 + 60 * np.sin((x + y) / 13.0)], -1).astype(np.uint8)


def _encode(image: np.ndarray, fmt: str, mode: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).convert(mode).save(buffer, fmt, quality=90)
  return buffer.getvalue()


def _both(encoded, **fields):
  ours = eval_image.center_crop(encoded, **fields)
  theirs = preprocess.center_crop(tf.constant(encoded), **fields).numpy()
  assert ours.shape == theirs.shape and ours.dtype == np.float32
  return ours, theirs


@pytest.mark.parametrize('method', ['bilinear', 'bicubic', 'nearest'])
@pytest.mark.parametrize('mode', ['RGB', 'RGBA', 'L'])
@pytest.mark.parametrize('channels', [1, 3])
def test_png_pixels_are_tensorflows_to_float_rounding(method, mode, channels):
  noise = np.random.default_rng(0).integers(0, 256, (97, 131, 3), np.uint8)
  for size, crop_fraction in ((32, 1.0), (224, 0.875)):  # Down and up.
    ours, theirs = _both(_encode(noise, 'PNG', mode), size=size,
                         channels=channels, method=method,
                         crop_fraction=crop_fraction)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4)


@pytest.mark.parametrize('channels', [1, 3])
def test_jpeg_pixels_are_within_a_few_grey_levels(channels):
  # TensorFlow decodes with the fast DCT and only the crop window.
  ours, theirs = _both(_encode(_smooth_image(120, 160), 'JPEG', 'RGB'),
                       size=64, channels=channels, method='bilinear',
                       crop_fraction=0.875)
  assert np.abs(ours - theirs).mean() < 1.5
  assert np.abs(ours - theirs).max() < 8


def test_what_it_cannot_redo_is_one_line():
  png = _encode(_smooth_image(8, 8), 'PNG', 'RGB')
  with pytest.raises(ValueError, match="'area' resizing needs TensorFlow"):
    eval_image.center_crop(png, size=4, channels=3, method='area',
                           crop_fraction=1.0)
  with pytest.raises(ValueError, match='cannot identify image file'):
    eval_image.center_crop(b'not an image', size=4, channels=3,
                           method='bilinear', crop_fraction=1.0)
