"""The embedded `digits_detection` dataset: counts, boxes tight around the
ink, its statistics, and the same canvases on every preparation."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcnn.data import catalog
from jaxcnn.data import datasets
from jaxcnn.data import digits_detection

SIZE = digits_detection.CANVAS_SIZE


@pytest.fixture(scope='module')
def builder(data_dir):
  return datasets.load_builder('digits_detection', data_dir)


@pytest.fixture(scope='module')
def train_examples(builder):
  return list(tfds.as_numpy(builder.as_dataset(split='train')))


def test_splits_hold_the_configured_canvases(builder, train_examples):
  assert builder.info.splits['train'].num_examples == 2000
  assert builder.info.splits['test'].num_examples == 300
  counts = np.bincount([len(e['objects']['label']) for e in train_examples])
  # 1-4 digits a canvas, each count common.
  assert counts[0] == 0 and len(counts) == 5 and counts[1:].min() > 400
  labels = np.concatenate([e['objects']['label'] for e in train_examples])
  assert sorted(set(labels)) == list(range(10))
  names = builder.info.features['objects']['label'].names
  assert names == list(catalog.get_spec('digits_detection').class_names)
  ids = [e['image/id'] for e in train_examples]
  assert sorted(ids) == list(range(2000))


def test_boxes_are_tight_around_the_ink(train_examples):
  for example in train_examples[:200]:
    image = example['image'][..., 0]
    boxes = example['objects']['bbox'] * SIZE
    np.testing.assert_array_equal(boxes, np.round(boxes))  # Whole pixels.
    y1, x1, y2, x2 = boxes.astype(int).T
    np.testing.assert_array_equal(example['objects']['area'],
                                  (y2 - y1) * (x2 - x1))
    assert not example['objects']['is_crowd'].any()
    covered = np.zeros_like(image, bool)
    for top, left, bottom, right in zip(y1, x1, y2, x2):
      window = image[top:bottom, left:right] > 0
      # Ink on every edge of its box.
      assert window[0].any() and window[-1].any()
      assert window[:, 0].any() and window[:, -1].any()
      covered[top:bottom, left:right] = True
    # No ink outside the boxes.
    assert not (image[~covered] > 0).any()


def test_digits_overlap_by_at_most_the_configured_fraction(train_examples):
  worst = 0.0
  for example in train_examples:
    boxes = example['objects']['bbox']
    for i in range(1, len(boxes)):
      worst = max(worst, digits_detection._overlap(boxes[i], boxes[:i]).max())
  assert 0.0 < worst <= digits_detection.MAX_OVERLAP + 1e-6


def test_catalog_statistics_are_the_train_split_s(train_examples):
  images = np.stack([e['image'] for e in train_examples]).astype(np.float64)
  spec = catalog.get_spec('digits_detection')
  assert abs(images.mean() - spec.mean[0]) < 0.1
  assert abs(images.std() - spec.std[0]) < 0.1


def _first_canvases(examples, count=5):
  """Pixels and objects of the canvases with ids < count, by id."""
  return {int(e['image/id']): (np.asarray(e['image']).tobytes(),
                               np.asarray(e['objects']['bbox']).tobytes(),
                               np.asarray(e['objects']['label']).tobytes())
          for e in examples if e['image/id'] < count}


def test_every_preparation_generates_the_same_canvases(builder):
  fresh = digits_detection.DigitsDetection(
      data_dir=builder.data_dir_root)._split_generators(None)
  for split, generator in fresh.items():
    stored = tfds.as_numpy(builder.as_dataset(split=split))
    regenerated = [example for _, (_, example) in zip(range(5), generator)]
    for example in regenerated:
      example['objects']['label'] = np.asarray(example['objects']['label'],
                                               np.int64)
    assert _first_canvases(stored) == _first_canvases(regenerated)
