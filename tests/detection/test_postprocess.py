"""Post-processing and NMS against effdet's `generate_detections` with a
numpy NMS (torchvision's compiled NMS does not load here), and soft-NMS
against effdet's own `batched_soft_nms`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcnn.detection import anchors as anchors_lib
from jaxcnn.detection import postprocess
from tests import torch_refs  # noqa: F401  # torchvision, before effdet.

from effdet import anchors as effdet_anchors  # pylint: disable=g-bad-import-order
from effdet import bench as effdet_bench  # pylint: disable=g-bad-import-order
from effdet import soft_nms as effdet_soft_nms  # pylint: disable=g-bad-import-order

_SIZE = (128, 256)
_CLASSES = 4
_BATCH = 2


def _numpy_nms(boxes, scores, classes, iou_threshold):
  """Greedy class-aware NMS over xyxy boxes: torchvision.ops.batched_nms."""
  suppressed = np.zeros(len(boxes), bool)
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  keep = []
  for i in np.argsort(-scores, kind='stable'):
    if suppressed[i]:
      continue
    keep.append(i)
    sides = np.clip(np.minimum(boxes[i, 2:], boxes[:, 2:]) -
                    np.maximum(boxes[i, :2], boxes[:, :2]), 0, None)
    intersection = sides[:, 0] * sides[:, 1]
    with np.errstate(invalid='ignore'):  # 0 / 0 for empty boxes: kept.
      overlap = intersection / (areas[i] + areas - intersection)
    suppressed |= (overlap > iou_threshold) & (classes == classes[i])
  return np.array(keep, dtype=np.int64)


@pytest.fixture(scope='module')
def outputs():
  rng = np.random.default_rng(0)
  sizes = anchors_lib.feature_sizes(_SIZE, 7)[3:]
  class_outputs = [rng.normal(0, 2, (_BATCH, h, w, 9 * _CLASSES)).astype(
      np.float32) for h, w in sizes]
  box_outputs = [rng.normal(0, 0.5, (_BATCH, h, w, 36)).astype(np.float32)
                 for h, w in sizes]
  return class_outputs, box_outputs


def _effdet_detections(class_outputs, box_outputs, max_candidates, scale,
                       original_size, monkeypatch, soft_nms=False):
  monkeypatch.setattr(
      effdet_anchors, 'batched_nms',
      lambda boxes, scores, classes, iou_threshold: torch.from_numpy(
          _numpy_nms(boxes.numpy(), scores.numpy(), classes.numpy(),
                     iou_threshold)))
  reference_anchors = effdet_anchors.Anchors(
      3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 4.0, _SIZE).boxes
  logits, codes, indices, classes = effdet_bench._post_process(  # pylint: disable=protected-access
      [torch.from_numpy(c.transpose(0, 3, 1, 2)) for c in class_outputs],
      [torch.from_numpy(b.transpose(0, 3, 1, 2)) for b in box_outputs],
      num_levels=5, num_classes=_CLASSES, max_detection_points=max_candidates)
  return np.stack([effdet_anchors.generate_detections(
      logits[i], codes[i], reference_anchors, indices[i], classes[i],
      None if scale is None else torch.tensor(scale[i]),
      None if original_size is None else torch.from_numpy(
          original_size[i, ::-1].copy()),  # effdet's img_size is (w, h).
      max_det_per_image=100, soft_nms=soft_nms).numpy()
                   for i in range(_BATCH)])


@pytest.mark.parametrize('max_candidates,rescale', [(1000, False),
                                                    (1000, True), (60, True)])
def test_detections_equal_effdet(outputs, max_candidates, rescale,
                                 monkeypatch):
  scale = np.array([1.5, 0.5], np.float32) if rescale else None
  original_size = (np.array([[150, 300], [60, 100]], np.float32)
                   if rescale else None)
  reference = _effdet_detections(*outputs, max_candidates, scale,
                                 original_size, monkeypatch)
  detect = jax.jit(lambda c, b: postprocess.detect(
      c, b, anchors_lib.anchor_boxes(_SIZE), _CLASSES,
      max_candidates=max_candidates, scale=scale,
      original_size=original_size))
  detections = detect(*outputs)
  assert detections.boxes.shape == (_BATCH, 100, 4)
  np.testing.assert_array_equal(detections.valid.sum(1),
                                (reference[..., 4] > 0).sum(1))
  if max_candidates == 60:  # Fewer than 100 survive: zero rows follow.
    assert 0 < detections.valid.sum(1).max() < 60
  np.testing.assert_allclose(postprocess.as_effdet(detections), reference,
                             rtol=1e-5, atol=1e-4)


def test_nms_on_hand_made_boxes():
  boxes = jnp.array([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10],
                     [20, 20, 30, 30], [0, 0, 10, 9]])
  scores = jnp.array([0.9, 0.8, 0.7, 0.6, -jnp.inf])
  classes = jnp.array([0, 0, 1, 0, 0])
  # Box 1 overlaps box 0 (IoU 81/119) in its class; box 2 is another class;
  # box 4 is not a candidate.
  indices, valid = postprocess.nms(boxes, scores, classes, max_outputs=5)
  np.testing.assert_array_equal(indices[:3], [0, 2, 3])
  np.testing.assert_array_equal(valid, [True, True, True, False, False])


def test_soft_detections_equal_effdet(outputs, monkeypatch):
  # Clipped boxes (coordinates >= 0), so that effdet's class offsets keep
  # the classes apart.
  scale = np.array([1.5, 0.5], np.float32)
  original_size = np.array([[150, 300], [60, 100]], np.float32)
  reference = _effdet_detections(*outputs, 300, scale, original_size,
                                 monkeypatch, soft_nms=True)
  detect = jax.jit(lambda c, b: postprocess.detect(
      c, b, anchors_lib.anchor_boxes(_SIZE), _CLASSES, max_candidates=300,
      scale=scale, original_size=original_size, nms_method='soft'))
  detections = detect(*outputs)
  np.testing.assert_array_equal(detections.valid.sum(1),
                                (reference[..., 4] > 0).sum(1))
  np.testing.assert_allclose(postprocess.as_effdet(detections), reference,
                             rtol=1e-5, atol=1e-4)


def test_soft_nms_equals_effdet_batched_soft_nms():
  rng = np.random.default_rng(1)
  count = 300
  corners = rng.uniform(0, 100, (count, 2))
  boxes = np.concatenate([corners, corners + rng.uniform(2, 40, (count, 2))],
                         1).astype(np.float32)
  scores = rng.uniform(0, 1, count).astype(np.float32)
  classes = rng.integers(0, 3, count)
  reference_indices, reference_scores = effdet_soft_nms.batched_soft_nms(
      torch.from_numpy(boxes), torch.from_numpy(scores),
      torch.from_numpy(classes), method_gaussian=True, iou_threshold=0.3,
      score_threshold=0.001)
  indices, kept_scores, valid = jax.jit(
      postprocess.soft_nms, static_argnums=3)(boxes, scores, classes, count)
  kept = int(valid.sum())
  assert kept == len(reference_indices)
  assert not valid[kept:].any()
  # Some boxes decay below the threshold and are dropped.
  assert 0 < count - kept
  np.testing.assert_array_equal(indices[:kept], reference_indices.numpy())
  np.testing.assert_allclose(kept_scores[:kept], reference_scores.numpy(),
                             rtol=1e-5, atol=1e-7)
  assert (np.diff(kept_scores[:kept]) <= 0).all()


def test_soft_nms_decays_overlapping_boxes_of_the_same_class():
  boxes = jnp.array([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 5],
                     [50, 50, 60, 60]])
  scores = jnp.array([0.9, 0.8, 0.7, 0.0005])
  classes = jnp.array([0, 0, 1, 0])
  # Box 1 (IoU 0.5 with box 0) decays to 0.8 exp(-0.25 / 0.5); box 2 is
  # another class; box 3 falls under the score threshold after the first
  # step.
  indices, kept_scores, valid = postprocess.soft_nms(boxes, scores, classes,
                                                     max_outputs=4)
  np.testing.assert_array_equal(indices[:3], [0, 2, 1])
  np.testing.assert_allclose(kept_scores[:3],
                             [0.9, 0.7, 0.8 * np.exp(-0.5)], rtol=1e-6)
  np.testing.assert_array_equal(valid, [True, True, True, False])


def test_detect_rejects_an_unknown_nms_method(outputs):
  with pytest.raises(ValueError, match='nms_method'):
    postprocess.detect(*outputs, anchors_lib.anchor_boxes(_SIZE), _CLASSES,
                       nms_method='linear')
