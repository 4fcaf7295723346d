"""Detection input on the shared stream: the batch layout of the detection
task, boxes that follow the pixels through flip and scale jitter, invalid
crowd and cropped-away boxes, exact resume, eval ground truth in original
pixels, COCO's 90-id labels and VOC's ids on hand-made mocked examples."""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import base
from jaxcnn.data import catalog
from jaxcnn.data import datasets
from jaxcnn.data import detection

SIZE = 128
MAX_BOXES = 8


def _config(**overrides):
  config = base.get_config()
  config.update(dict(task='detection', dataset='digits_detection',
                     image_size=SIZE, batch_size=4, eval_batch_size=4,
                     max_boxes=MAX_BOXES, jitter_min=0.1, jitter_max=2.0,
                     random_flip=True, shuffle_buffer=64))
  config.update(overrides)
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_train_batches_have_the_contract_layout(detection_data_dir):
  data = detection.create(_config(data_dir=detection_data_dir),
                          model_channels=3)
  batch = next(data.train_batches())
  expected = {'image': ((4, SIZE, SIZE, 3), np.float32),
              'boxes': ((4, MAX_BOXES, 4), np.float32),
              'classes': ((4, MAX_BOXES), np.int32),
              'box_valid': ((4, MAX_BOXES), np.float32)}
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  padding = batch['box_valid'] == 0
  assert padding.any() and not padding.all()
  assert set(np.unique(batch['box_valid'])) <= {0.0, 1.0}
  assert (batch['boxes'] >= 0).all() and (batch['boxes'] <= SIZE).all()
  assert (batch['classes'] >= 0).all() and (batch['classes'] < 10).all()
  assert data.train_examples == 2000 and data.steps_per_epoch == 500


def test_without_jitter_or_flip_train_examples_are_the_canvases(
    detection_data_dir):
  config = _config(data_dir=detection_data_dir, jitter_min=1.0,
                   jitter_max=1.0, random_flip=False, batch_size=1,
                   shuffle_buffer=1)
  data = detection.create(config, model_channels=1)
  batch = next(data.train_batches())
  raw = next(iter(tfds.as_numpy(data.builder.as_dataset(split='train',
                                                        shuffle_files=False))))
  spec = catalog.get_spec('digits_detection')
  np.testing.assert_allclose(
      batch['image'][0], (raw['image'] - spec.mean[0]) / spec.std[0],
      atol=1e-4)
  count = len(raw['objects']['label'])
  np.testing.assert_allclose(batch['boxes'][0, :count],
                             raw['objects']['bbox'] * SIZE, atol=1e-4)
  np.testing.assert_array_equal(batch['classes'][0, :count],
                                raw['objects']['label'])
  assert batch['box_valid'][0].sum() == count


def test_place_boxes_is_scale_shift_and_clip():
  boxes = tf.constant([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 0.02, 0.1]])
  placed = detection.place_boxes(boxes, tf.constant([200, 300]),
                                 tf.constant([10, 50]), SIZE).numpy()
  # [20, 60, 100, 270] - [10, 50, 10, 50], clipped to [0, 128];
  # the second box lies left of the crop: zero width.
  np.testing.assert_allclose(placed, [[10, 10, 90, 128], [0, 0, 0, 0]])
  np.testing.assert_allclose(
      detection.flip_boxes(boxes).numpy(),
      [[0.1, 0.1, 0.5, 0.8], [0.0, 0.9, 0.02, 1.0]], atol=1e-6)


def _ink_box(image, threshold):
  rows, cols = np.nonzero(image > threshold)
  return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1],
                  np.float32)


def _rectangle_example(height, width, box, crowd=(False,)):
  """A black image with a white rectangle at `box` (pixels), COCO-style."""
  image = np.zeros((height, width, 3), np.uint8)
  top, left, bottom, right = box
  image[top:bottom, left:right] = 255
  return {'image': tf.io.encode_png(image),
          'objects': {
              'bbox': tf.constant([box], tf.float32) / [height, width,
                                                        height, width],
              'label': tf.constant([0], tf.int64),
              'is_crowd': tf.constant(crowd),
              'area': tf.constant([7], tf.int64)}}


def test_train_boxes_follow_the_pixels_through_flip_and_jitter():
  examples = detection.Examples(_config(), catalog.get_spec('coco/2017'), 3)
  example = _rectangle_example(90, 150, [5, 10, 35, 60])
  mean, std = examples.mean[0], examples.std[0]
  cropped_away, sides = 0, set()
  for index in range(24):
    out = examples.train(tf.constant([7, index], tf.int64), example)
    pixels = out['image'].numpy()[..., 0] * std + mean
    box, valid = out['boxes'].numpy()[0], out['box_valid'].numpy()[0]
    if (pixels > 200).any():
      np.testing.assert_allclose(box, _ink_box(pixels, 200), atol=1.5)
      assert valid == 1.0
      if not out['image'].numpy()[:, -1].any():  # Not cropped: padded.
        width = out['image'].numpy()[0].any(axis=-1).sum()
        # The rectangle is in the left third unless flipped.
        sides.add(bool((box[1] + box[3]) / 2 > width / 2))
    else:
      cropped_away += 1
      assert valid == 0.0 and (box[2] - box[0]) * (box[3] - box[1]) == 0
    # Padding rows stay zero.
    assert not out['boxes'].numpy()[1:].any()
  assert 0 < cropped_away < 24 and sides == {False, True}


def test_crowd_boxes_are_invalid_in_training_and_marked_in_eval():
  examples = detection.Examples(_config(jitter_min=1.0, jitter_max=1.0),
                                catalog.get_spec('coco/2017'), 3)
  example = _rectangle_example(64, 64, [5, 10, 35, 60], crowd=(True,))
  train = examples.train(tf.constant([0, 0], tf.int64), example)
  assert train['box_valid'].numpy()[0] == 0.0
  assert train['boxes'].numpy()[0].any()
  example['image/id'] = tf.constant(42, tf.int64)
  evaluated = examples.eval(example)
  assert evaluated['gt_valid'].numpy()[0] == 1.0
  assert evaluated['gt_crowd'].numpy()[0] == 1.0
  assert evaluated['gt_area'].numpy()[0] == 7.0  # COCO's own area.


def test_same_seed_same_batches_and_resuming_continues_the_stream(
    detection_data_dir):
  config = _config(data_dir=detection_data_dir, shuffle_buffer=16)
  data = detection.create(config, 3)
  stream = _take(data.train_batches(), 5)
  again = _take(data.train_batches(), 1)
  resumed = _take(data.train_batches(start_step=3), 2)
  for a, b in zip(stream[:1] + stream[3:], again + resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  config.seed = 1
  other = next(detection.create(config, 3).train_batches())
  assert not np.array_equal(other['boxes'], stream[0]['boxes'])


def _mock_dataset(examples):
  """A tfds as_dataset replacement yielding `examples` for every split."""
  def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del self, split, decoders, read_config, kwargs
    parts = [tf.data.Dataset.from_tensors(e) for e in examples]
    return functools.reduce(tf.data.Dataset.concatenate, parts)
  return as_dataset


# (height, width, boxes in pixels, tfds labels, crowd)
_COCO_IMAGES = [
    (60, 100, [[10, 20, 40, 60]], [0], [False]),
    (120, 40, [[0, 0, 30, 40], [50, 5, 100, 20]], [11, 79], [False, True]),
    (64, 64, [[8, 8, 56, 56]], [26], [False]),
    (50, 70, [[5, 10, 25, 30]], [3], [False]),
    (90, 90, [[20, 30, 60, 70]], [45], [False]),
]


def _coco_examples():
  examples = []
  for image_id, (height, width, boxes, labels, crowd) in enumerate(
      _COCO_IMAGES):
    image = np.zeros((height, width, 3), np.uint8)
    for top, left, bottom, right in boxes:
      image[top:bottom, left:right] = 255
    scale = np.array([height, width, height, width], np.float32)
    examples.append({
        'image': tf.io.encode_png(image),
        'image/id': tf.constant(1000 + image_id, tf.int64),
        'image/filename': tf.constant(f'{image_id:012d}.jpg'),
        'objects': {
            'bbox': tf.constant(np.array(boxes, np.float32) / scale),
            'label': tf.constant(labels, tf.int64),
            'is_crowd': tf.constant(crowd),
            'area': tf.constant([100 + i for i in range(len(boxes))],
                                tf.int64),
            'id': tf.constant(list(range(len(boxes))), tf.int64)}})
  return examples


@pytest.fixture(scope='module')
def coco_eval():
  config = _config(dataset='coco/2017')
  with tfds.testing.mock_data(as_dataset_fn=_mock_dataset(_coco_examples())):
    data = detection.create(config, model_channels=3)
    return list(data.eval_batches()), next(data.train_batches())


def test_coco_labels_map_to_the_90_id_space(coco_eval):
  eval_batches, train = coco_eval
  classes = eval_batches[0]['gt_classes']
  # tfds labels 0, 11, 79, 26, 45 are COCO category ids 1, 13, 90, 31, 51.
  assert classes[0, 0] == 0 and list(classes[1, :2]) == [12, 89]
  assert classes[2, 0] == 30
  assert eval_batches[1]['gt_classes'][0, 0] == 50
  assert train['classes'].max() <= 89
  names = catalog.COCO_CLASS_NAMES
  assert (names[0], names[12], names[89], names[11]) == (
      'person', 'stop sign', 'toothbrush', 'unused_12')


def test_last_eval_batch_is_padded_with_mask_zero(coco_eval):
  eval_batches, _ = coco_eval
  assert len(eval_batches) == 2
  np.testing.assert_array_equal(eval_batches[0]['mask'], [1, 1, 1, 1])
  np.testing.assert_array_equal(eval_batches[1]['mask'], [1, 0, 0, 0])
  assert not eval_batches[1]['gt_valid'][1:].any()
  ids = np.concatenate([b['image_id'] for b in eval_batches])
  np.testing.assert_array_equal(ids[:5], [1000, 1001, 1002, 1003, 1004])


def test_eval_ground_truth_is_in_original_pixels(coco_eval):
  eval_batches, _ = coco_eval
  rows = {key: np.concatenate([b[key] for b in eval_batches])[:5]
          for key in eval_batches[0]}
  mean = catalog.IMAGENET_MEAN[0]
  std = catalog.IMAGENET_STD[0]
  for i, (height, width, boxes, _, crowd) in enumerate(_COCO_IMAGES):
    count = len(boxes)
    np.testing.assert_allclose(rows['original_size'][i], [height, width])
    np.testing.assert_allclose(rows['scale'][i], max(height, width) / SIZE,
                               rtol=1e-6)
    np.testing.assert_allclose(rows['gt_boxes'][i, :count], boxes, atol=1e-3)
    assert not rows['gt_boxes'][i, count:].any()
    np.testing.assert_array_equal(rows['gt_valid'][i, :count], 1.0)
    np.testing.assert_array_equal(rows['gt_crowd'][i, :count], crowd)
    np.testing.assert_array_equal(rows['gt_area'][i, :count],
                                  100 + np.arange(count))
    # The boxes drawn on the input are gt_boxes / scale.
    image = rows['image'][i, ..., 0]
    on_input = rows['gt_boxes'][i, 0] / rows['scale'][i]
    np.testing.assert_allclose(_ink_box(image * std + mean, 200)[:2],
                               on_input[:2], atol=1.0)
    # Padded with 0 right of and below the resized image.
    resized = np.round(np.array([height, width]) / rows['scale'][i]).astype(
        int)
    assert not image[resized[0]:].any() and not image[:, resized[1]:].any()
    assert image[:resized[0], :resized[1]].min() < 0


def test_voc_ids_come_from_file_names_and_difficult_is_crowd():
  examples = []
  for name, difficult in (('000123.jpg', False), ('2008_000008.jpg', True)):
    examples.append({
        'image': tf.io.encode_png(np.zeros((50, 80, 3), np.uint8)),
        'image/filename': tf.constant(name),
        'objects': {'bbox': tf.constant([[0.2, 0.25, 0.6, 0.5]]),
                    'label': tf.constant([14], tf.int64),
                    'is_difficult': tf.constant([difficult]),
                    'is_truncated': tf.constant([False]),
                    'pose': tf.constant([0], tf.int64)}})
  config = _config(dataset='voc/2007', eval_batch_size=2)
  with tfds.testing.mock_data(as_dataset_fn=_mock_dataset(examples)):
    data = detection.create(config, model_channels=3)
    batch = next(data.eval_batches())
    train = next(data.train_batches())
  np.testing.assert_array_equal(batch['image_id'], [123, 2008000008])
  np.testing.assert_array_equal(batch['gt_crowd'][:, 0], [0.0, 1.0])
  np.testing.assert_array_equal(batch['gt_classes'][:, 0], [14, 14])
  # No area in VOC: the box's, in original pixels (20 x 20).
  np.testing.assert_allclose(batch['gt_area'][:, 0], [400.0, 400.0])
  assert train['box_valid'].sum() < 4  # Two of the four rows are difficult.
  assert catalog.get_spec('voc/2007').class_names[14] == 'person'


def _voc_examples(names, labels):
  return [{'image': tf.io.encode_png(np.zeros((40, 60, 3), np.uint8)),
           'image/filename': tf.constant(name),
           'objects': {'bbox': tf.constant([[0.1, 0.1, 0.9, 0.9]]),
                       'label': tf.constant([label], tf.int64),
                       'is_difficult': tf.constant([False]),
                       'is_truncated': tf.constant([False]),
                       'pose': tf.constant([0], tf.int64)}}
          for name, label in zip(names, labels, strict=True)]


def test_voc_2007_and_2012_train_as_one_set_and_test_on_2007():
  # Each image its own class, so that a batch's classes name its images.
  by_year = {'2007': _voc_examples(['000001.jpg', '000002.jpg'], [1, 2]),
             '2012': _voc_examples(
                 ['2008_000001.jpg', '2008_000002.jpg', '2011_000003.jpg'],
                 [3, 4, 5])}

  def as_dataset(builder, split, **kwargs):
    del split, kwargs
    return functools.reduce(tf.data.Dataset.concatenate, [
        tf.data.Dataset.from_tensors(e)
        for e in by_year[builder.builder_config.name]])

  config = _config(dataset='voc/2007+2012', batch_size=5, eval_batch_size=2,
                   shuffle_buffer=5, random_flip=False, jitter_min=1.0,
                   jitter_max=1.0)
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    data = detection.create(config, model_channels=3)
    epochs = [batch['classes'][:, 0] for batch in
              _take(data.train_batches(), 2)]
    resumed = next(data.train_batches(start_step=1))['classes'][:, 0]
    eval_ids = [list(b['image_id']) for b in data.eval_batches()]
  assert data.train_examples == 5 and data.steps_per_epoch == 1
  # Each epoch (one batch of 5) holds every image of both years once.
  for classes in epochs:
    assert sorted(classes) == [1, 2, 3, 4, 5]
  assert not (epochs[0] == epochs[1]).all()  # Reshuffled per epoch.
  np.testing.assert_array_equal(resumed, epochs[1])
  assert eval_ids == [[1, 2]]  # Only 2007's test images are evaluated.


def test_a_missing_voc_2012_part_says_how_to_prepare_both(tmp_path):
  with pytest.raises(datasets.DatasetNotPreparedError,
                     match=r"'voc/2007\+2012' \(its voc/2012 part\) is not "
                     r'prepared.*`tfds build voc/2007 voc/2012'):
    datasets.load_more_train('voc/2007+2012', str(tmp_path))


def test_only_the_first_max_boxes_are_kept():
  examples = detection.Examples(_config(max_boxes=3),
                                catalog.get_spec('coco/2017'), 3)
  tops = np.arange(5, dtype=np.float32) / 10
  example = {'image': tf.io.encode_png(np.zeros((20, 20, 3), np.uint8)),
             'image/id': tf.constant(1, tf.int64),
             'objects': {'bbox': tf.constant(np.stack(
                             [tops, tops, tops + 0.1, tops + 0.1], axis=1)),
                         'label': tf.constant([0, 1, 2, 3, 4], tf.int64),
                         'is_crowd': tf.constant([False] * 5),
                         'area': tf.constant([1] * 5, tf.int64)}}
  evaluated = examples.eval(example)
  np.testing.assert_array_equal(evaluated['gt_classes'].numpy(), [0, 1, 2])
  np.testing.assert_allclose(evaluated['gt_boxes'].numpy()[:, 0], [0, 2, 4],
                             atol=1e-5)


def test_detection_refuses_classification_datasets_and_lists_its_own():
  with pytest.raises(ValueError,
                     match='digits is a classification dataset.*coco/2017, '
                     'digits_detection, voc/2007, voc/2007\\+2012'):
    detection.create(_config(dataset='digits'), 1)
  assert catalog.names('detection') == ['coco/2017', 'digits_detection',
                                        'voc/2007', 'voc/2007+2012']
  assert 'digits' in catalog.names('classification')
  assert 'image_folder' in catalog.names('classification')
  assert set(catalog.names()) == set(catalog.names('classification')) | set(
      catalog.names('detection'))


def test_coco_class_table_is_90_slots_with_80_used():
  spec = catalog.get_spec('coco/2017')
  assert spec.num_classes == len(spec.class_names) == 90
  assert len(set(spec.label_classes)) == 80
  assert spec.label_classes[:12] == tuple(range(11)) + (12,)
  assert spec.label_classes[-1] == 89
  unused = [n for n in spec.class_names if n.startswith('unused_')]
  assert unused == [f'unused_{i}' for i in (12, 26, 29, 30, 45, 66, 68, 69,
                                            71, 83)]
