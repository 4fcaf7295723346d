"""Per-example decode, crop, flip and normalisation as tf.data graph ops.

Every random choice is a stateless op driven by a per-example `seed` ([2]
int64), so a run's batches depend only on the config seed and their position
in the stream: restarting at step N reproduces them exactly.
"""

from jaxcnn.data.catalog import INTERPOLATIONS
from jaxcnn.imports import tensorflow as tf


def check_interpolation(method: str) -> None:
  if method not in INTERPOLATIONS:
    raise ValueError(f'Unknown interpolation {method!r}; use one of '
                     f'{", ".join(INTERPOLATIONS)}.')


def _decode_window(encoded: tf.Tensor, window: tf.Tensor,
                   channels: int) -> tf.Tensor:
  """Decodes only `window` ([y, x, h, w]) of an encoded image (fast for JPEG)."""
  def decode_jpeg():
    return tf.image.decode_and_crop_jpeg(encoded, window, channels=channels)

  def decode_other():
    image = tf.io.decode_image(encoded, channels=channels,
                               expand_animations=False)
    return tf.slice(image, [window[0], window[1], 0],
                    [window[2], window[3], channels])

  image = tf.cond(tf.io.is_jpeg(encoded), decode_jpeg, decode_other)
  return tf.ensure_shape(image, [None, None, channels])


def image_shape(encoded: tf.Tensor, channels: int) -> tf.Tensor:
  """[height, width] of an encoded image, without decoding JPEG pixels."""
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.image.extract_jpeg_shape(encoded)[:2],
      lambda: tf.shape(tf.io.decode_image(
          encoded, channels=channels, expand_animations=False))[:2])


def _resize(image: tf.Tensor, size: int, method: str) -> tf.Tensor:
  image = tf.image.resize(image, [size, size], method=method, antialias=False)
  # 'nearest' keeps uint8; the others are float32 already.
  return tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)


def random_resized_crop(encoded: tf.Tensor, seed: tf.Tensor, *, size: int,
                        channels: int, method: str,
                        area_range=(0.08, 1.0),
                        aspect_ratio_range=(3 / 4, 4 / 3)) -> tf.Tensor:
  """Inception-style crop of a random area and aspect ratio, resized."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([image_shape(encoded, channels), [channels]], axis=0),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed, min_object_covered=0.1,
      aspect_ratio_range=aspect_ratio_range, area_range=area_range,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  return _resize(_decode_window(encoded, window, channels), size, method)


def center_crop(encoded: tf.Tensor, *, size: int, channels: int, method: str,
                crop_fraction: float) -> tf.Tensor:
  """Central crop of `crop_fraction` of the short side, resized to `size`."""
  shape = image_shape(encoded, channels)
  height, width = shape[0], shape[1]
  short = tf.minimum(height, width)
  crop = tf.cast(tf.round(crop_fraction * tf.cast(short, tf.float32)),
                 tf.int32)
  window = tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2,
                     crop, crop])
  return _resize(_decode_window(encoded, window, channels), size, method)


def pad_and_random_crop(image: tf.Tensor, seed: tf.Tensor, *,
                        padding: int) -> tf.Tensor:
  """CIFAR-style: zero-pad each side by `padding`, crop back to the size."""
  height, width, channels = image.shape
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  return tf.image.stateless_random_crop(padded, [height, width, channels],
                                        seed=seed)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  return tf.image.stateless_random_flip_left_right(image, seed=seed)


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
  return (tf.cast(image, tf.float32) - mean) / std
