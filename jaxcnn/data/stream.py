"""The seeded, resumable input stream that every task reads its data through.

Train is read as `data_shards` disjoint shards (default one per process), each
an endless stream of per-epoch seeded shuffles filling its own rows of every
batch. An example's random seed is derived from its shard and position in
that stream, so the batch at step N is a pure function of (config, N, shard
count): a resumed run skips the examples it has seen (before decoding them)
and continues with identical batches, and with a fixed `data_shards` any
process count that divides it sees the same global batches.
Train may read several datasets as one (`more_train`, e.g. VOC 2007+2012),
each shard taking its part of every one of them.
Eval visits every example exactly once, padding the last batch with
`mask == 0` examples.

What an example becomes (crops, augmentation, box targets) is the task's:
`train_example(seed, example)` and `eval_example(example)`.
"""

import dataclasses
import functools
import math
from typing import Any, Callable, Iterator

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from jaxcnn.data import datasets
from jaxcnn.imports import tensorflow as tf

Batch = dict[str, np.ndarray]
Example = dict[str, tf.Tensor]


def _map(ds: tf.data.Dataset, fn: Callable[..., Any],
         **kwargs: Any) -> tf.data.Dataset:
  """`ds.map(fn)` without AutoGraph's conversion of `fn`, which tf.data
  applies by default (about 3 s of every run's start): the tasks' example
  functions branch in Python on static values only."""
  return ds.map(tf.autograph.experimental.do_not_convert(fn), **kwargs)


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


@dataclasses.dataclass
class Stream:
  """The train and eval data of one run, as seen by the current process."""
  builder: tfds.core.DatasetBuilder
  train_split: str
  eval_split: str
  batch_size: int  # Global.
  eval_batch_size: int
  # (seed [2] int64, raw example) -> features, and raw example -> features.
  train_example: Callable[[tf.Tensor, Example], Example]
  eval_example: Callable[[Example], Example]
  seed: int = 0
  data_shards: int = -1  # -1: one per process.
  shuffle_buffer: int = 16_384
  decoders: Any = None  # tfds decoders, e.g. to decode images in the task.
  process_index: int = 0
  process_count: int = 1
  # (builder, split) pairs read for training after `builder`'s train split.
  more_train: tuple[tuple[tfds.core.DatasetBuilder, str], ...] = ()

  def __post_init__(self):
    shards = self.data_shards if self.data_shards > 0 else self.process_count
    per_process = _divide(shards, self.process_count, '--config.data_shards')
    sources = ((self.builder, self.train_split), *self.more_train)
    self.train_parts = {
        shard: [(builder, tfds.split_for_jax_process(
            split, process_index=shard, process_count=shards))
                for builder, split in sources]
        for shard in range(self.process_index * per_process,
                           (self.process_index + 1) * per_process)}
    self.local_eval_split = tfds.split_for_jax_process(
        self.eval_split, process_index=self.process_index,
        process_count=self.process_count)
    self.shard_examples = {
        shard: sum(_num_examples(builder, split) for builder, split in parts)
        for shard, parts in self.train_parts.items()}
    self.local_train_examples = sum(self.shard_examples.values())
    self.local_eval_examples = _num_examples(self.builder,
                                             self.local_eval_split)
    self.train_examples = sum(_num_examples(builder, split)
                              for builder, split in sources)
    self.local_batch = _divide(self.batch_size, self.process_count,
                               '--config.batch_size')
    self.shard_batch = _divide(self.batch_size, shards, '--config.batch_size',
                               'the number of data shards')
    self.local_eval_batch = _divide(self.eval_batch_size, self.process_count,
                                    '--config.eval_batch_size')

  @property
  def steps_per_epoch(self) -> int:
    return max(1, self.train_examples // self.batch_size)

  @property
  def eval_steps(self) -> int:
    # Every process runs the same number of steps; splits differ by <= 1.
    max_local = math.ceil(
        _num_examples(self.builder, self.eval_split) / self.process_count
    ) if self.builder.info.splits else self.local_eval_examples
    return math.ceil(max_local / self.local_eval_batch)

  def _read(self, split, builder=None) -> tf.data.Dataset:
    return (builder or self.builder).as_dataset(
        split=split, decoders=self.decoders, shuffle_files=False)

  def _shard_batches(self, shard: int, start_step: int) -> tf.data.Dataset:
    """The rows of `shard` in every batch from global step `start_step` on."""
    examples = self.shard_examples[shard]
    base_seed = self.seed * 65_536 + shard
    buffer = min(examples, self.shuffle_buffer)
    raw = functools.reduce(tf.data.Dataset.concatenate, [
        self._read(split, builder)
        for builder, split in self.train_parts[shard]])

    def epoch(index):
      shuffled = raw.shuffle(buffer, seed=base_seed * 1_000_003 + index,
                             reshuffle_each_iteration=False)
      positions = tf.data.Dataset.range(index * examples, (index + 1) * examples)
      seeds = _map(positions, lambda p: tf.stack(
          [tf.constant(base_seed, tf.int64), p]))
      return tf.data.Dataset.zip(seeds, shuffled)

    first = start_step * self.shard_batch
    ds = tf.data.Dataset.range(first // examples, 2**62).flat_map(epoch)
    ds = ds.skip(first % examples)
    ds = _map(ds, self.train_example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(self.shard_batch, drop_remainder=True)

  def train_dataset(self, start_step: int = 0) -> tf.data.Dataset:
    """This process's rows of the batches from global step `start_step` on,
    forever."""
    parts = [self._shard_batches(shard, start_step)
             for shard in self.train_parts]
    ds = parts[0]
    if len(parts) > 1:
      ds = _map(tf.data.Dataset.zip(tuple(parts)),
                lambda *rows: tf.nest.map_structure(
                    lambda *x: tf.concat(x, axis=0), *rows))
    return ds.prefetch(tf.data.AUTOTUNE)

  def _eval_example(self, example: Example) -> Example:
    return {**self.eval_example(example), 'mask': tf.constant(1.0)}

  def eval_dataset(self) -> tf.data.Dataset:
    """Every eval example once, in `eval_steps` batches padded with mask 0."""
    ds = _map(self._read(self.local_eval_split), self._eval_example,
              num_parallel_calls=tf.data.AUTOTUNE)
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


def for_run(config: ml_collections.ConfigDict,
            builder: tfds.core.DatasetBuilder, train_split: str,
            eval_split: str, train_example: Callable[[tf.Tensor, Example],
                                                      Example],
            eval_example: Callable[[Example], Example], process_index: int,
            process_count: int) -> Stream:
  """The stream of a run's config (batch sizes, seed, shards, shuffle
  buffer) over `builder`'s splits (and the train splits that its dataset
  adds, e.g. VOC 2012's), its images left encoded for the task's examples
  to decode (and crop) in one op."""
  return Stream(
      builder, train_split, eval_split, config.batch_size,
      config.eval_batch_size, train_example=train_example,
      eval_example=eval_example, seed=config.seed,
      data_shards=config.data_shards, shuffle_buffer=config.shuffle_buffer,
      decoders={'image': tfds.decode.SkipDecoding()},
      process_index=process_index, process_count=process_count,
      more_train=datasets.load_more_train(config.dataset, config.data_dir,
                                          download=config.download))
