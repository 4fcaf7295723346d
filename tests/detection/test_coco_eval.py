"""CocoEvaluator against APs computed by hand and against pycocotools run
the documented way, on COCO-format JSON files."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from pycocotools import coco
from pycocotools import cocoeval

from jaxcnn.detection import coco_eval

_MAX_BOXES = 4
_MAX_DETECTIONS = 5


def _batch(images, padding_rows=0):
  """Evaluator input for images given as dicts: `image_id`, `gt` [(yxyx,
  class, crowd, area)], `det` [(xyxy, score, class)]; padding rows hold
  garbage (the first image's id, boxes and high scores) with mask 0."""
  count = len(images) + padding_rows
  batch = {
      'image_id': np.zeros(count, np.int32),
      'mask': np.zeros(count, np.float32),
      'gt_boxes': np.zeros((count, _MAX_BOXES, 4), np.float32),
      'gt_classes': np.zeros((count, _MAX_BOXES), np.int32),
      'gt_valid': np.zeros((count, _MAX_BOXES), np.float32),
      'gt_crowd': np.zeros((count, _MAX_BOXES), np.float32),
      'gt_area': np.zeros((count, _MAX_BOXES), np.float32),
      'det_boxes': np.zeros((count, _MAX_DETECTIONS, 4), np.float32),
      'det_scores': np.zeros((count, _MAX_DETECTIONS), np.float32),
      'det_classes': np.zeros((count, _MAX_DETECTIONS), np.int32),
      'det_valid': np.zeros((count, _MAX_DETECTIONS), bool),
  }
  for row, image in enumerate(images):
    batch['image_id'][row] = image['image_id']
    batch['mask'][row] = 1
    for n, (box, cls, crowd, area) in enumerate(image.get('gt', [])):
      batch['gt_boxes'][row, n] = box
      batch['gt_classes'][row, n] = cls
      batch['gt_valid'][row, n] = 1
      batch['gt_crowd'][row, n] = crowd
      batch['gt_area'][row, n] = area
    for n, (box, score, cls) in enumerate(image.get('det', [])):
      batch['det_boxes'][row, n] = box
      batch['det_scores'][row, n] = score
      batch['det_classes'][row, n] = cls
      batch['det_valid'][row, n] = True
  if images:
    garbage = slice(len(images), None)
    batch['image_id'][garbage] = images[0]['image_id']
    batch['gt_boxes'][garbage] = [0, 0, 50, 50]
    batch['gt_valid'][garbage] = 1
    batch['det_boxes'][garbage] = [60, 60, 90, 90]
    batch['det_scores'][garbage] = 0.99
    batch['det_valid'][garbage] = True
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _evaluate(*batches):
  evaluator = coco_eval.CocoEvaluator()
  for batch in batches:
    evaluator.add(batch)
  return evaluator.result(), evaluator


# Image 1: gt A and B, detected (IoU 1 and 0.62); image 2: gt C, detected
# exactly but ranked below a false positive; image 3: nothing.
_HAND_MADE = [
    {'image_id': 1,
     'gt': [([0, 0, 10, 10], 0, 0, 100), ([20, 20, 30, 30], 0, 0, 100)],
     'det': [([0, 0, 10, 10], 0.9, 0), ([20, 20, 30, 26.2], 0.6, 0)]},
    {'image_id': 2,
     'gt': [([0, 50, 10, 60], 0, 0, 100)],
     'det': [([50, 0, 60, 10], 0.7, 0), ([80, 80, 90, 90], 0.8, 0)]},
    {'image_id': 3},
]


def test_hand_computed_average_precision_and_recall(capsys):
  result, evaluator = _evaluate(_batch(_HAND_MADE[:1]),
                                _batch(_HAND_MADE[1:], padding_rows=1))
  # Ranked TP, FP, TP, then B's detection: TP at IoU thresholds 0.5, 0.55,
  # 0.6, FP at the 7 others. Precision made monotone, at COCO's 101 recall
  # points 0, 0.01, .., 1: with B found, 1 up to recall 0.33 (34 points)
  # then 3/4; without it, 1 (34 points), 2/3 up to recall 0.66 (33 points),
  # then 0 (recall 1 is never reached).
  ap_with_b, ap_without_b = (34 + 67 * 0.75) / 101, (34 + 33 * 2 / 3) / 101
  ar = (3 * 1 + 7 * 2 / 3) / 10
  expected = {
      'AP': (3 * ap_with_b + 7 * ap_without_b) / 10, 'AP50': ap_with_b,
      'AP75': ap_without_b, 'APs': (3 * ap_with_b + 7 * ap_without_b) / 10,
      'APm': -1, 'APl': -1,
      # One detection per image: A found, the false positive on image 2.
      'AR1': 1 / 3, 'AR10': ar, 'AR100': ar, 'ARs': ar, 'ARm': -1,
      'ARl': -1}
  assert result.keys() == expected.keys()
  for name, value in expected.items():
    assert result[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
  assert capsys.readouterr().out == ''  # pycocotools' printing silenced.
  assert evaluator.summary().startswith(
      'COCO box evaluation of 3 images, 3 ground-truth boxes, 4 detections')
  assert 'Average Precision  (AP) @[ IoU=0.50      |' in evaluator.summary()


def _random_images(rng, count, perfect):
  images = []
  for image_id in range(10, 10 + count):
    gt, det = [], []
    for _ in range(rng.integers(0, _MAX_BOXES + 1)):
      y1, x1 = rng.uniform(0, 300, 2)
      h, w = rng.uniform(5, 200, 2)
      box = [y1, x1, y1 + h, x1 + w]
      cls = int(rng.choice([0, 2, 4]))
      crowd = 0 if perfect else int(rng.uniform() < 0.15)
      gt.append((box, cls, crowd, h * w * rng.uniform(0.5, 1)))
      if len(det) < _MAX_DETECTIONS and (perfect or rng.uniform() < 0.8):
        jitter = 0 if perfect else rng.normal(0, 0.1 * min(h, w), 4)
        det.append((np.array(box)[[1, 0, 3, 2]] + jitter,
                    rng.uniform(0.05, 1), cls))
    while not perfect and len(det) < _MAX_DETECTIONS:
      x1, y1 = rng.uniform(0, 300, 2)
      # Class 6 never occurs in the ground truth.
      det.append(([x1, y1, x1 + 40, y1 + 30], rng.uniform(0.05, 1),
                  int(rng.choice([0, 2, 6]))))
    images.append({'image_id': image_id, 'gt': gt, 'det': det})
  return images


def test_perfect_detections_give_ap_one():
  images = _random_images(np.random.default_rng(0), 12, perfect=True)
  result, _ = _evaluate(_batch(images[:7], padding_rows=1),
                        _batch(images[7:]))
  # One detection per image cannot find every box of an image with several.
  assert 0.5 < result.pop('AR1') < 1
  assert result == pytest.approx(
      {name: 1.0 for name in coco_eval.STAT_NAMES if name != 'AR1'},
      rel=1e-12)


def test_equals_pycocotools_on_json_files(tmp_path):
  images = _random_images(np.random.default_rng(1), 16, perfect=False)
  result, _ = _evaluate(_batch(images[:9], padding_rows=2),
                        _batch(images[9:]))
  annotations, detections = [], []
  for image in images:
    for (y1, x1, y2, x2), cls, crowd, area in image['gt']:
      annotations.append({
          'id': len(annotations) + 1, 'image_id': image['image_id'],
          'category_id': cls + 1, 'iscrowd': crowd,
          'bbox': [float(np.float32(v)) for v in (x1, y1)] + [
              float(np.float32(x2)) - float(np.float32(x1)),
              float(np.float32(y2)) - float(np.float32(y1))],
          'area': float(np.float32(area))})
    for (x1, y1, x2, y2), score, cls in image['det']:
      x1, y1, x2, y2 = (float(np.float32(v)) for v in (x1, y1, x2, y2))
      detections.append({'image_id': image['image_id'],
                         'category_id': cls + 1,
                         'bbox': [x1, y1, x2 - x1, y2 - y1],
                         'score': float(np.float32(score))})
  # The whole 90-id COCO space: ids without ground truth change nothing.
  (tmp_path / 'gt.json').write_text(json.dumps({
      'images': [{'id': image['image_id']} for image in images],
      'annotations': annotations,
      'categories': [{'id': i} for i in range(1, 91)]}))
  (tmp_path / 'det.json').write_text(json.dumps(detections))
  truth = coco.COCO(str(tmp_path / 'gt.json'))
  evaluation = cocoeval.COCOeval(truth, truth.loadRes(
      str(tmp_path / 'det.json')), 'bbox')
  evaluation.evaluate()
  evaluation.accumulate()
  evaluation.summarize()
  assert 0.2 < evaluation.stats[0] < 0.9  # Neither trivial nor perfect.
  np.testing.assert_allclose([result[n] for n in coco_eval.STAT_NAMES],
                             evaluation.stats, rtol=0, atol=1e-12)


def test_crowd_ground_truth_is_neither_found_nor_missed():
  # A detection on a crowd box, ranked first, and a crowd box not found: AP
  # 1 only if both are ignored (dropping crowd boxes would make the first
  # detection a false positive, counting them would miss one).
  image = {'image_id': 5,
           'gt': [([0, 0, 10, 10], 1, 0, 100), ([0, 20, 40, 60], 1, 1, 1600),
                  ([50, 50, 90, 90], 1, 1, 1600)],
           'det': [([20, 0, 60, 40], 0.9, 1), ([0, 0, 10, 10], 0.5, 1)]}
  result, _ = _evaluate(_batch([image]))
  assert result['AP'] == pytest.approx(1, rel=1e-12)
  assert result['AR100'] == 1.0


def test_padding_rows_and_invalid_detections_are_ignored():
  image = {'image_id': 1, 'gt': [([0, 0, 10, 10], 0, 0, 100)],
           'det': [([0, 0, 10, 10], 0.5, 0)]}
  batch = dict(_batch([image], padding_rows=3))
  # A high-scoring false positive in a row that is not valid.
  batch['det_boxes'] = batch['det_boxes'].at[0, 1].set([50, 50, 60, 60])
  batch['det_scores'] = batch['det_scores'].at[0, 1].set(0.9)
  result, evaluator = _evaluate(batch)
  assert result['AP'] == pytest.approx(1, rel=1e-12)
  assert 'of 1 images, 1 ground-truth boxes, 1 detections' in (
      evaluator.summary())


def test_ground_truth_area_sorts_boxes_by_size():
  # A 10 x 10 box whose given area (e.g. COCO's segment area) is medium.
  image = {'image_id': 1, 'gt': [([0, 0, 10, 10], 0, 0, 5000)],
           'det': [([0, 0, 10, 10], 0.5, 0)]}
  result, _ = _evaluate(_batch([image]))
  assert (result['APs'], result['APm'], result['APl']) == pytest.approx(
      (-1, 1, -1), rel=1e-12)


def test_no_detections_give_zero():
  images = [{'image_id': i, 'gt': [([0, 0, 10, 10], 3, 0, 100)]}
            for i in (1, 2)]
  result, _ = _evaluate(_batch(images, padding_rows=1))
  assert result['AP'] == result['AP50'] == result['AR100'] == 0.0


def test_no_ground_truth_and_no_detections_give_minus_one():
  result, evaluator = _evaluate(_batch([{'image_id': 1}, {'image_id': 2}]))
  assert result == {name: -1.0 for name in coco_eval.STAT_NAMES}
  assert evaluator.summary().startswith('COCO box evaluation of 2 images')


def test_an_image_added_twice_is_an_error():
  evaluator = coco_eval.CocoEvaluator()
  evaluator.add(_batch(_HAND_MADE[:2]))
  with pytest.raises(ValueError, match='image_id 2 was added to the '
                     'evaluation twice'):
    evaluator.add(_batch(_HAND_MADE[1:]))
