"""Classification input on the shared stream: shapes, determinism, exact
resume, padded eval, errors."""

import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import base
from jaxcnn.data import catalog
from jaxcnn.data import classification
from jaxcnn.data import datasets


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_digits_train_batches_have_the_configured_shape(digits_config):
  data = classification.create(digits_config, model_channels=1)
  batch = next(data.train_batches())
  assert batch['image'].shape == (64, 32, 32, 1)
  assert batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32
  assert data.train_examples == 1437
  assert data.steps_per_epoch == 1437 // 64
  # Normalised with the dataset's statistics: roughly zero mean, unit scale.
  assert abs(batch['image'].mean()) < 0.3
  assert 0.6 < batch['image'].std() < 1.4


def test_grayscale_is_tiled_for_rgb_models(digits_config):
  data = classification.create(digits_config, model_channels=3)
  image = next(data.train_batches())['image']
  assert image.shape[-1] == 3
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_same_seed_gives_same_batches_and_other_seed_differs(digits_config):
  first = _take(classification.create(digits_config, 1).train_batches(), 3)
  again = _take(classification.create(digits_config, 1).train_batches(), 3)
  digits_config.seed = 1
  other = _take(classification.create(digits_config, 1).train_batches(), 3)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert not np.array_equal(first[0]['label'], other[0]['label'])


def test_resuming_at_a_step_reproduces_the_stream_across_epochs(digits_config):
  data = classification.create(digits_config, 1)
  steps = data.steps_per_epoch
  stream = _take(data.train_batches(), steps + 3)
  resumed = _take(data.train_batches(start_step=steps - 1), 4)
  for a, b in zip(stream[steps - 1:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  # Each epoch is a different permutation.
  assert not np.array_equal(stream[0]['label'], stream[steps]['label'])


def test_eval_visits_every_example_exactly_once(digits_config):
  digits_config.eval_batch_size = 100  # 360 examples: the last batch is padded.
  data = classification.create(digits_config, 1)
  batches = list(data.eval_batches())
  assert data.eval_steps == len(batches) == 4
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == 360 and masks[:360].all() and not masks[360:].any()
  # Eval is deterministic: two passes give identical images.
  again = list(data.eval_batches())
  np.testing.assert_array_equal(batches[0]['image'], again[0]['image'])


def test_processes_read_disjoint_halves(digits_config):
  digits_config.batch_size = 32
  halves = [classification.create(digits_config, 1, process_index=i, process_count=2)
            for i in range(2)]
  assert [h.local_train_examples for h in halves] == [719, 718]
  assert halves[0].local_batch == 16
  evals = [np.concatenate([b['mask'] for b in h.eval_batches()])
           for h in halves]
  assert evals[0].sum() + evals[1].sum() == 360
  assert len(evals[0]) == len(evals[1])  # Same number of steps everywhere.


@pytest.mark.parametrize('name', sorted(
    set(catalog.names('classification')) - {'digits', catalog.IMAGE_FOLDER}))
def test_every_dataset_pipeline_runs_on_mock_data(name):
  spec = datasets.get_spec(name)
  config = base.get_config()
  config.dataset = name
  config.image_size = 32
  config.batch_size = 4
  config.eval_batch_size = 3
  with tfds.testing.mock_data(num_examples=10):
    data = classification.create(config, model_channels=3)
    batch = next(data.train_batches())
    eval_batches = list(data.eval_batches())
  assert batch['image'].shape == (4, 32, 32, 3)
  assert batch['label'].max() < spec.num_classes
  assert sum(b['mask'].sum() for b in eval_batches) == 10
  assert eval_batches[-1]['image'].shape == (3, 32, 32, 3)


def test_unknown_dataset_lists_the_known_ones():
  with pytest.raises(ValueError, match='Unknown dataset .*cifar10.*digits'):
    datasets.get_spec('cifar11')


def test_losing_the_race_to_prepare_an_embedded_dataset_reads_the_winners(
    data_dir, monkeypatch):
  """Parallel search children preparing `digits` in one data dir: tfds
  renames each process's finished copy into place, and every process but
  the first fails to."""
  def lose(builder, *args, **kwargs):
    raise FileExistsError(f'Cannot rename {builder.data_dir}.incomplete. '
                          f'Destination {builder.data_dir} already exists.')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', lose)
  builder = datasets.load_builder('digits', data_dir)
  assert builder.info.splits['train'].num_examples + builder.info.splits[
      'test'].num_examples == 1797


def test_missing_dataset_fails_fast_saying_how_to_prepare_it(tmp_path):
  start = time.monotonic()
  with pytest.raises(datasets.DatasetNotPreparedError,
                     match=r'tfds build cifar10 --data_dir'):
    datasets.load_builder('cifar10', str(tmp_path))
  with pytest.raises(datasets.DatasetNotPreparedError,
                     match='manual.*--config.dataset=digits'):
    datasets.load_builder('imagenet2012', str(tmp_path))
  assert time.monotonic() - start < 10


def test_bad_pipeline_fields_are_named(digits_config):
  digits_config.train_crop = 'random'
  with pytest.raises(ValueError, match='train_crop'):
    classification.create(digits_config, 1)


@pytest.mark.parametrize('augment', ['randaugment', 'autoaugment'])
def test_augmentation_runs_in_the_pipeline_deterministically(augment):
  config = base.get_config()
  config.update(dict(dataset='imagenet2012', image_size=32, batch_size=8,
                     random_flip=False))
  with tfds.testing.mock_data(num_examples=8):
    plain = next(classification.create(config, 3).train_batches())
    config.augment = augment
    first = next(classification.create(config, 3).train_batches())
    again = next(classification.create(config, 3).train_batches())
  np.testing.assert_array_equal(first['image'], again['image'])
  changed = [not np.array_equal(a, b)
             for a, b in zip(first['image'], plain['image'])]
  assert sum(changed) >= 4


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_cutout_zeroes_one_square_clipped_to_the_image(seed):
  image = tf.ones([32, 32, 3])
  out = classification.cutout(image, 16, tf.constant([seed, 7], tf.int64))
  zeroed = (out.numpy() == 0).all(-1)
  rows, cols = np.nonzero(zeroed)
  # One axis-aligned rectangle, at most 16 x 16, at least 8 x 8 (centre in).
  assert zeroed.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
  assert 8 <= np.ptp(rows) + 1 <= 16 and 8 <= np.ptp(cols) + 1 <= 16
  assert (out.numpy()[~zeroed] == 1).all()
