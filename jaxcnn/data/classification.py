"""Classification examples on the shared stream: image crops, flips,
RandAugment / AutoAugment and normalisation, with integer labels."""

import dataclasses

import ml_collections

from jaxcnn.data import catalog
from jaxcnn.data import datasets
from jaxcnn.data import preprocess
from jaxcnn.data import stream
from jaxcnn.data.catalog import AUGMENTS, TRAIN_CROPS
from jaxcnn.imports import tensorflow as tf


def _check_choice(value: str, choices: tuple[str, ...], field: str) -> None:
  if value not in choices:
    raise ValueError(f'--config.{field}={value!r} is not one of '
                     f'{", ".join(choices)}.')


def cutout(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """Zeroes (the dataset mean, once normalised) a size x size square,
  clipped to the image, centred at a uniformly random pixel (DeVries &
  Taylor 2017, as NASNet's CIFAR recipe uses it)."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  centre = tf.random.stateless_uniform([2], seed, maxval=2**31 - 1,
                                       dtype=tf.int32) % tf.stack(
                                           [height, width])
  rows = tf.range(height)[:, None] - centre[0]
  cols = tf.range(width)[None, :] - centre[1]
  low, high = -(size // 2), size - size // 2
  inside = ((rows >= low) & (rows < high)) & ((cols >= low) & (cols < high))
  return image * tf.cast(~inside, image.dtype)[:, :, None]


@dataclasses.dataclass
class Examples:
  """What a dataset's raw example becomes for training and evaluation."""
  config: ml_collections.ConfigDict
  spec: datasets.DatasetSpec
  model_channels: int

  def __post_init__(self):
    config = self.config
    _check_choice(config.train_crop, TRAIN_CROPS, 'train_crop')
    _check_choice(config.augment, AUGMENTS, 'augment')
    preprocess.check_interpolation(config.interpolation)
    # Images are decoded straight to the model's channel count.
    self.mean, self.std = catalog.channel_statistics(
        self.spec.mean, self.spec.std, self.model_channels)
    if config.augment != 'none' and self.model_channels != 3:
      raise ValueError(f'--config.augment={config.augment} needs RGB images; '
                       f'{config.model} takes {self.model_channels} channel(s).')

  def _normalize(self, image: tf.Tensor) -> tf.Tensor:
    return preprocess.normalize(image, self.mean, self.std)

  def _decode_resized(self, encoded: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=self.model_channels,
                               expand_animations=False)
    size = self.config.image_size
    image = tf.image.resize(tf.cast(image, tf.float32), [size, size],
                            method=self.config.interpolation)
    return tf.clip_by_value(image, 0.0, 255.0)

  def _augment(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    from jaxcnn.data import augment  # Only pipelines that augment need it.
    image = tf.cast(tf.round(image), tf.uint8)
    if self.config.augment == 'randaugment':
      image = augment.randaugment(
          image, seed, num_layers=self.config.randaugment_num_layers,
          magnitude=self.config.randaugment_magnitude)
    else:
      image = augment.autoaugment(image, seed)
    return tf.cast(image, tf.float32)

  def train(self, seed: tf.Tensor, example: stream.Example) -> stream.Example:
    config = self.config
    crop_seed, flip_seed, augment_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    if config.train_crop == 'random_resized':
      image = preprocess.random_resized_crop(
          example['image'], crop_seed, size=config.image_size,
          channels=self.model_channels, method=config.interpolation)
    else:
      image = self._decode_resized(example['image'])
      if config.train_crop == 'pad_and_crop':
        image = preprocess.pad_and_random_crop(image, crop_seed,
                                               padding=config.crop_padding)
    if config.random_flip:
      image = preprocess.random_flip(image, flip_seed)
    if config.augment != 'none':
      image = self._augment(image, augment_seed)
    image = self._normalize(image)
    if config.cutout_size:
      # Folded from the augmentation's seed: the other draws stay as they
      # were without cutout.
      image = cutout(image, config.cutout_size,
                     tf.random.experimental.stateless_fold_in(augment_seed, 1))
    return {'image': image, 'label': tf.cast(example['label'], tf.int32)}

  def eval(self, example: stream.Example) -> stream.Example:
    image = preprocess.center_crop(
        example['image'], size=self.config.image_size,
        channels=self.model_channels, method=self.config.interpolation,
        crop_fraction=self.config.eval_crop_fraction)
    return {'image': self._normalize(image),
            'label': tf.cast(example['label'], tf.int32)}


def create(config: ml_collections.ConfigDict, model_channels: int, *,
           process_index: int = 0, process_count: int = 1) -> stream.Stream:
  """Loads (preparing embedded datasets) the run's dataset as a stream of
  classification batches."""
  spec = datasets.get_spec(config.dataset)
  builder = datasets.load_builder(config.dataset, config.data_dir,
                                  download=config.download,
                                  val_fraction=config.val_fraction)
  examples = Examples(config, spec, model_channels)
  return stream.for_run(config, builder, spec.train_split, spec.eval_split,
                        examples.train, examples.eval, process_index,
                        process_count)
