"""Train and eval input pipelines: per-process shards of a tfds dataset.

Train is read as `data_shards` disjoint shards (default one per process), each
an endless stream of per-epoch seeded shuffles filling its own rows of every
batch. An example's augmentation seed is derived from its shard and position
in that stream, so the batch at step N is a pure function of (config, N,
shard count): a resumed run skips the examples it has seen (before decoding
them) and continues with identical batches, and with a fixed `data_shards`
any process count that divides it sees the same global batches.
Eval visits every example exactly once, padding the last batch with
`mask == 0` examples.
"""

import dataclasses
import math
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcnn.data import datasets
from jaxcnn.data import preprocess
from jaxcnn.data.catalog import AUGMENTS, TRAIN_CROPS
Batch = dict[str, np.ndarray]


def _num_examples(builder: tfds.core.DatasetBuilder, split) -> int:
  if builder.info.splits:
    return builder.info.splits[split].num_examples
  # Mocked datasets (tfds.testing.mock_data) have no split metadata.
  return int(builder.as_dataset(split=split).cardinality())


def _divide(total: int, parts: int, what: str,
            parts_name: str = 'the number of processes') -> int:
  if total % parts:
    raise ValueError(f'{what} ({total}) must be divisible by {parts_name} '
                     f'({parts}).')
  return total // parts


def _check_choice(value: str, choices: tuple[str, ...], field: str) -> None:
  if value not in choices:
    raise ValueError(f'--config.{field}={value!r} is not one of '
                     f'{", ".join(choices)}.')


@dataclasses.dataclass
class InputPipeline:
  """The datasets of one run, as seen by the current process."""
  config: ml_collections.ConfigDict
  spec: datasets.DatasetSpec
  builder: tfds.core.DatasetBuilder
  model_channels: int
  process_index: int
  process_count: int

  def __post_init__(self):
    config = self.config
    _check_choice(config.train_crop, TRAIN_CROPS, 'train_crop')
    _check_choice(config.augment, AUGMENTS, 'augment')
    preprocess.check_interpolation(config.interpolation)
    # Images are decoded straight to the model's channel count.
    self.mean, self.std = preprocess.channel_statistics(
        self.spec.mean, self.spec.std, self.model_channels)
    if config.augment != 'none' and self.model_channels != 3:
      raise ValueError(f'--config.augment={config.augment} needs RGB images; '
                       f'{config.model} takes {self.model_channels} channel(s).')
    shards = (config.data_shards if config.data_shards > 0
              else self.process_count)
    per_process = _divide(shards, self.process_count, '--config.data_shards')
    self.train_splits = {
        shard: tfds.split_for_jax_process(
            self.spec.train_split, process_index=shard, process_count=shards)
        for shard in range(self.process_index * per_process,
                           (self.process_index + 1) * per_process)}
    self.eval_split = tfds.split_for_jax_process(
        self.spec.eval_split, process_index=self.process_index,
        process_count=self.process_count)
    self.shard_examples = {shard: _num_examples(self.builder, split)
                           for shard, split in self.train_splits.items()}
    self.local_train_examples = sum(self.shard_examples.values())
    self.local_eval_examples = _num_examples(self.builder, self.eval_split)
    self.train_examples = _num_examples(self.builder, self.spec.train_split)
    self.local_batch = _divide(config.batch_size, self.process_count,
                               '--config.batch_size')
    self.shard_batch = _divide(config.batch_size, shards, '--config.batch_size',
                               'the number of data shards')
    self.local_eval_batch = _divide(config.eval_batch_size, self.process_count,
                                    '--config.eval_batch_size')

  @property
  def steps_per_epoch(self) -> int:
    return max(1, self.train_examples // self.config.batch_size)

  @property
  def eval_steps(self) -> int:
    # Every process runs the same number of steps; splits differ by <= 1.
    max_local = math.ceil(
        _num_examples(self.builder, self.spec.eval_split) / self.process_count
    ) if self.builder.info.splits else self.local_eval_examples
    return math.ceil(max_local / self.local_eval_batch)

  def _read(self, split) -> tf.data.Dataset:
    return self.builder.as_dataset(
        split=split, decoders={'image': tfds.decode.SkipDecoding()},
        shuffle_files=False)

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

  def _train_example(self, seed: tf.Tensor, example: dict) -> dict:
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
    return {'image': self._normalize(image),
            'label': tf.cast(example['label'], tf.int32)}

  def _eval_example(self, example: dict) -> dict:
    image = preprocess.center_crop(
        example['image'], size=self.config.image_size,
        channels=self.model_channels, method=self.config.interpolation,
        crop_fraction=self.config.eval_crop_fraction)
    return {'image': self._normalize(image),
            'label': tf.cast(example['label'], tf.int32),
            'mask': tf.constant(1.0)}

  def _shard_batches(self, shard: int, start_step: int) -> tf.data.Dataset:
    """The rows of `shard` in every batch from global step `start_step` on."""
    examples = self.shard_examples[shard]
    base_seed = self.config.seed * 65_536 + shard
    buffer = min(examples, self.config.shuffle_buffer)
    raw = self._read(self.train_splits[shard])

    def epoch(index):
      shuffled = raw.shuffle(buffer, seed=base_seed * 1_000_003 + index,
                             reshuffle_each_iteration=False)
      positions = tf.data.Dataset.range(index * examples, (index + 1) * examples)
      seeds = positions.map(lambda p: tf.stack([tf.constant(base_seed, tf.int64),
                                                p]))
      return tf.data.Dataset.zip(seeds, shuffled)

    first = start_step * self.shard_batch
    ds = tf.data.Dataset.range(first // examples, 2**62).flat_map(epoch)
    ds = ds.skip(first % examples)
    ds = ds.map(self._train_example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(self.shard_batch, drop_remainder=True)

  def train_dataset(self, start_step: int = 0) -> tf.data.Dataset:
    """This process's rows of the batches from global step `start_step` on,
    forever."""
    parts = [self._shard_batches(shard, start_step)
             for shard in self.train_splits]
    ds = parts[0]
    if len(parts) > 1:
      ds = tf.data.Dataset.zip(tuple(parts)).map(
          lambda *rows: tf.nest.map_structure(
              lambda *x: tf.concat(x, axis=0), *rows))
    return ds.prefetch(tf.data.AUTOTUNE)

  def eval_dataset(self) -> tf.data.Dataset:
    """Every eval example once, in `eval_steps` batches padded with mask 0."""
    ds = self._read(self.eval_split).map(
        self._eval_example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.concatenate(self._padding(ds).repeat())
    ds = ds.take(self.eval_steps * self.local_eval_batch)
    return ds.batch(self.local_eval_batch).prefetch(tf.data.AUTOTUNE)

  @staticmethod
  def _padding(ds: tf.data.Dataset) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensors(tf.nest.map_structure(
        lambda spec: tf.zeros(spec.shape, spec.dtype), ds.element_spec))

  def train_batches(self, start_step: int = 0) -> Iterator[Batch]:
    return self.train_dataset(start_step).as_numpy_iterator()

  def eval_batches(self) -> Iterator[Batch]:
    return self.eval_dataset().as_numpy_iterator()


def create(config: ml_collections.ConfigDict, model_channels: int, *,
           process_index: int = 0, process_count: int = 1) -> InputPipeline:
  """Loads (preparing embedded datasets) and describes the run's data."""
  spec = datasets.get_spec(config.dataset)
  builder = datasets.load_builder(config.dataset, config.data_dir,
                                  download=config.download)
  return InputPipeline(config, spec, builder, model_channels, process_index,
                       process_count)
