"""Detection examples on the shared stream: images with their boxes, for
`digits_detection`, tfds `coco/2017` and `voc/2007` alike.

Training follows google/automl's EfficientDet input: horizontal flip, then
scale jitter (the image fits image_size * a random factor, is cropped at a
random offset when larger and padded at the bottom/right when smaller), boxes
moved with it and clipped. Evaluation resizes the longer side to image_size
and pads, keeping the ground truth in original pixels for the evaluator.
Boxes are [y1, x1, y2, x2] in pixels; at most `max_boxes` per image are kept,
the first ones in the dataset's order.
"""

import dataclasses

import ml_collections

from jaxcnn.data import catalog
from jaxcnn.data import datasets
from jaxcnn.data import preprocess
from jaxcnn.data import stream
from jaxcnn.imports import tensorflow as tf


def resized_shape(height: tf.Tensor, width: tf.Tensor,
                  target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(input pixels per original pixel, [height, width] int32) of the image
  scaled, aspect kept, so that it fits a target x target square."""
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  target = tf.cast(target, tf.float32)
  image_scale = tf.minimum(target / height, target / width)
  shape = tf.round(tf.stack([height, width]) * image_scale)
  shape = tf.clip_by_value(shape, 1.0, tf.maximum(target, 1.0))
  return image_scale, tf.cast(shape, tf.int32)


def jitter(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, size: int,
           jitter_min: float, jitter_max: float
           ) -> tuple[tf.Tensor, tf.Tensor]:
  """A random scale jitter: the [height, width] the image is resized to
  (fitting size * U(jitter_min, jitter_max)) and the [y, x] offset of the
  size x size crop taken from it (uniform where it is larger, else 0)."""
  scale_seed, offset_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  factor = tf.random.stateless_uniform([], scale_seed, jitter_min, jitter_max)
  _, shape = resized_shape(height, width, tf.floor(factor * size))
  room = tf.cast(tf.maximum(shape - size, 0), tf.float32)
  offset = tf.floor(room * tf.random.stateless_uniform([2], offset_seed))
  return shape, tf.cast(offset, tf.int32)


def place_image(image: tf.Tensor, shape: tf.Tensor, offset: tf.Tensor,
                size: int) -> tf.Tensor:
  """`image` resized to `shape`, its size x size window at `offset`, padded
  with zeros at the bottom/right to size x size."""
  resized = tf.image.resize(image, shape, method='bilinear', antialias=False)
  window = resized[offset[0]:offset[0] + size, offset[1]:offset[1] + size]
  return tf.image.pad_to_bounding_box(window, 0, 0, size, size)


def place_boxes(boxes: tf.Tensor, shape: tf.Tensor, offset: tf.Tensor,
                size: int) -> tf.Tensor:
  """Normalised boxes [N, 4] -> pixels of the placed image, clipped to it."""
  scale = tf.cast(tf.tile(shape, [2]), tf.float32)
  shift = tf.cast(tf.tile(offset, [2]), tf.float32)
  return tf.clip_by_value(boxes * scale - shift, 0.0, float(size))


def flip_boxes(boxes: tf.Tensor) -> tf.Tensor:
  """Normalised boxes of the horizontally flipped image."""
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  return tf.stack([y1, 1.0 - x2, y2, 1.0 - x1], axis=-1)


def _box_areas(boxes: tf.Tensor) -> tf.Tensor:
  return (tf.maximum(boxes[:, 2] - boxes[:, 0], 0.0) *
          tf.maximum(boxes[:, 3] - boxes[:, 1], 0.0))


def _pad(values: tf.Tensor, rows: int) -> tf.Tensor:
  """The first `rows` rows of `values`, zero-padded to exactly `rows`."""
  values = values[:rows]
  padding = [[0, rows - tf.shape(values)[0]]] + [[0, 0]] * (
      len(values.shape) - 1)
  padded = tf.pad(values, padding)
  return tf.ensure_shape(padded, [rows, *values.shape[1:]])


def file_name_id(filename: tf.Tensor) -> tf.Tensor:
  """A VOC image's id: the digits of its file name ('2008_000123.jpg' ->
  2008000123), which VOC's names make unique and which fit in int32."""
  digits = tf.strings.regex_replace(filename, '[^0-9]', '')
  return tf.strings.to_number(digits, tf.int64)


@dataclasses.dataclass
class Examples:
  """What a detection dataset's raw example becomes for training and
  evaluation."""
  config: ml_collections.ConfigDict
  spec: catalog.DatasetSpec
  model_channels: int

  def __post_init__(self):
    self.mean, self.std = catalog.channel_statistics(
        self.spec.mean, self.spec.std, self.model_channels)
    self.size = self.config.image_size
    self.max_boxes = self.config.max_boxes

  def _decode_normalised(self, encoded: tf.Tensor) -> tf.Tensor:
    # Normalised before resizing (bilinear weights sum to one, so the order
    # does not matter), so that the padding is 0, the mean.
    image = tf.io.decode_image(encoded, channels=self.model_channels,
                               expand_animations=False)
    return preprocess.normalize(image, self.mean, self.std)

  def _objects(self, example: stream.Example) -> dict[str, tf.Tensor]:
    """Normalised boxes, class indices and crowd flags, first max_boxes."""
    objects = example['objects']
    labels = tf.cast(objects['label'], tf.int32)
    if self.spec.label_classes:
      labels = tf.gather(tf.constant(self.spec.label_classes, tf.int32),
                         labels)
    crowd = objects['is_crowd'] if 'is_crowd' in objects else objects[
        'is_difficult']
    found = {'boxes': tf.reshape(objects['bbox'], [-1, 4]),
             'classes': labels, 'crowd': tf.cast(crowd, tf.float32)}
    if 'area' in objects:
      found['area'] = tf.cast(objects['area'], tf.float32)
    return {key: value[:self.max_boxes] for key, value in found.items()}

  def train(self, seed: tf.Tensor, example: stream.Example) -> stream.Example:
    flip_seed, jitter_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    image = self._decode_normalised(example['image'])
    objects = self._objects(example)
    boxes = objects['boxes']
    if self.config.random_flip:
      flip = tf.random.stateless_uniform([], flip_seed) < 0.5
      image = tf.cond(flip, lambda: tf.image.flip_left_right(image),
                      lambda: image)
      boxes = tf.cond(flip, lambda: flip_boxes(boxes), lambda: boxes)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    shape, offset = jitter(jitter_seed, height, width, self.size,
                           self.config.jitter_min, self.config.jitter_max)
    boxes = place_boxes(boxes, shape, offset, self.size)
    valid = tf.cast(_box_areas(boxes) > 0, tf.float32) * (1 - objects['crowd'])
    return {
        'image': place_image(image, shape, offset, self.size),
        'boxes': _pad(boxes, self.max_boxes),
        'classes': _pad(objects['classes'], self.max_boxes),
        'box_valid': _pad(valid, self.max_boxes),
    }

  def eval(self, example: stream.Example) -> stream.Example:
    image = self._decode_normalised(example['image'])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    image_scale, shape = resized_shape(height, width, self.size)
    original_size = tf.cast(tf.stack([height, width]), tf.float32)
    objects = self._objects(example)
    boxes = objects['boxes'] * tf.tile(original_size, [2])
    area = objects.get('area', _box_areas(boxes))
    if 'image/id' in example:
      image_id = example['image/id']
    else:
      image_id = file_name_id(example['image/filename'])
    return {
        'image': place_image(image, shape, tf.zeros([2], tf.int32),
                             self.size),
        'image_id': tf.cast(image_id, tf.int32),
        'scale': 1.0 / image_scale,
        'original_size': original_size,
        'gt_boxes': _pad(boxes, self.max_boxes),
        'gt_classes': _pad(objects['classes'], self.max_boxes),
        'gt_valid': _pad(tf.ones_like(objects['crowd']), self.max_boxes),
        'gt_crowd': _pad(objects['crowd'], self.max_boxes),
        'gt_area': _pad(area, self.max_boxes),
    }


def create(config: ml_collections.ConfigDict, model_channels: int, *,
           process_index: int = 0, process_count: int = 1) -> stream.Stream:
  """Loads (preparing embedded datasets) the run's detection dataset as a
  stream of batches in the detection task's layout."""
  spec = datasets.get_spec(config.dataset)
  if spec.task != 'detection':
    raise ValueError(
        f'--config.dataset={config.dataset} is a {spec.task} dataset; '
        'detection reads one of '
        f'{", ".join(catalog.names("detection"))}.')
  builder = datasets.load_builder(config.dataset, config.data_dir,
                                  download=config.download)
  examples = Examples(config, spec, model_channels)
  return stream.for_run(config, builder, spec.train_split, spec.eval_split,
                        examples.train, examples.eval, process_index,
                        process_count)
