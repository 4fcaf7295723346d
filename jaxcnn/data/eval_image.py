"""An image file's evaluation preprocessing without TensorFlow.

`preprocess.center_crop` (the eval pipeline's TensorFlow ops) redone with
Pillow and numpy, for inference where TensorFlow is not installed: the same
crop window, and `tf.image.resize(antialias=False)`'s half-pixel sampling
with its borders (bicubic: Keys' kernel, a = -0.5). PNG, BMP and GIF
pixels are TensorFlow's; a JPEG's differ by about 1 (of 255) on average:
TensorFlow decodes with libjpeg's fast integer DCT and only the crop.
"""

import io

import numpy as np
from PIL import Image

# 'area' (TF's box filter over the covered area) is not redone here.
INTERPOLATIONS = ('bilinear', 'bicubic', 'nearest')


_CUBIC_TABLE_SIZE = 1024  # TF samples Keys' kernel at 1/1024 steps.


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
  t = np.abs(t)
  return np.where(
      t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
      np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _resize_matrix(size_in: int, size_out: int, method: str) -> np.ndarray:
  """[size_out, size_in] weights of one axis of TF's resize (float32
  sample positions, as its kernels compute them)."""
  scale = np.float32(size_in) / np.float32(size_out)
  out = np.arange(size_out, dtype=np.float32)
  weights = np.zeros((size_out, size_in), np.float64)
  rows = np.arange(size_out)
  if method == 'nearest':
    index = np.floor((out + np.float32(0.5)) * scale).astype(int)
    weights[rows, np.clip(index, 0, size_in - 1)] = 1
    return weights
  position = (out + np.float32(0.5)) * scale - np.float32(0.5)
  low = np.floor(position).astype(int)
  delta = (position - low).astype(np.float64)
  if method == 'bilinear':  # Taps clamped to the border.
    for index, weight in ((low, 1 - delta), (low + 1, delta)):
      np.add.at(weights, (rows, np.clip(index, 0, size_in - 1)), weight)
    return weights
  # Bicubic: taps outside the image get no weight; the rest sum to 1.
  delta = np.rint(delta * _CUBIC_TABLE_SIZE) / _CUBIC_TABLE_SIZE
  for offset in (-1, 0, 1, 2):
    index = low + offset
    inside = (index >= 0) & (index < size_in)
    weights[rows[inside], index[inside]] += _keys_cubic(
        delta - offset)[inside]
  return weights / weights.sum(axis=1, keepdims=True)


def _decode(encoded: bytes, channels: int) -> np.ndarray:
  """[H, W, channels] pixels as TensorFlow decodes them: a JPEG's grey is
  its luma channel (libjpeg's own output), other formats' libpng's
  weighting of red, green and blue; alpha is dropped."""
  with Image.open(io.BytesIO(encoded)) as image:
    if channels == 3:
      return np.asarray(image.convert('RGB'), np.float64)
    if image.format == 'JPEG':
      image.draft('L', image.size)
      return np.asarray(image.convert('L'), np.float64)[..., None]
    if image.mode in ('L', 'LA', 'I;16', 'I'):
      return np.asarray(image.convert('L'), np.float64)[..., None]
    rgb = np.asarray(image.convert('RGB'), np.int64)
  # libpng's png_set_rgb_to_gray(0.299, 0.587) in 15-bit fixed point.
  red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  grey = (9797 * red + 19234 * green + 3737 * blue) >> 15
  grey = np.where((red == green) & (red == blue), red, grey)
  return grey.astype(np.float64)[..., None]


def center_crop(encoded: bytes, *, size: int, channels: int, method: str,
                crop_fraction: float) -> np.ndarray:
  """[size, size, channels] float32 on the 0-255 scale: the centre crop of
  `crop_fraction` of the short side, resized to `size`.

  Raises ValueError for an image Pillow cannot decode or an interpolation
  not redone here.
  """
  pixels = decode(encoded, channels)
  height, width = pixels.shape[:2]
  crop = int(np.round(np.float32(crop_fraction) * np.float32(min(height,
                                                                 width))))
  top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
  return resize(pixels[top:top + crop, left:left + crop], size, size, method)


def decode(encoded: bytes, channels: int) -> np.ndarray:
  """[H, W, channels] float64 pixels as TensorFlow decodes them; ValueError
  for an image Pillow cannot decode."""
  try:
    return _decode(encoded, channels)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(str(e)) from None


def resize(pixels: np.ndarray, height: int, width: int,
           method: str) -> np.ndarray:
  """`tf.image.resize(pixels, [height, width], method)` (no antialiasing),
  float32 clipped to 0-255."""
  if method not in INTERPOLATIONS:
    raise ValueError(f"{method!r} resizing needs TensorFlow; without it "
                     f"images take {', '.join(INTERPOLATIONS)}, or pass "
                     "preprocessed .npy batches")
  rows = _resize_matrix(pixels.shape[0], height, method)
  columns = _resize_matrix(pixels.shape[1], width, method)
  resized = np.einsum('ij,jkc->ikc', rows, pixels)
  resized = np.einsum('lk,ikc->ilc', columns, resized)
  return np.clip(resized, 0.0, 255.0).astype(np.float32)
