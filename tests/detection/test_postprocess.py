"""Post-processing and NMS against effdet's `generate_detections` with a
numpy NMS (torchvision's compiled NMS does not load here)."""

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
                       original_size, monkeypatch):
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
      max_det_per_image=100).numpy() for i in range(_BATCH)])


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
