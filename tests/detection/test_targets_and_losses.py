"""Target assignment, box coding and losses against effdet's, and their
behaviour on degenerate ground truth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcnn.detection import anchors as anchors_lib
from jaxcnn.detection import boxes as boxes_lib
from jaxcnn.detection import losses
from jaxcnn.detection import targets as targets_lib
from tests import torch_refs  # noqa: F401  # torchvision, before effdet.

from effdet import anchors as effdet_anchors  # pylint: disable=g-bad-import-order
from effdet import loss as effdet_loss  # pylint: disable=g-bad-import-order

_SIZE = (128, 256)
_CLASSES = 5
_BATCH, _MAX_BOXES = 3, 6


@pytest.fixture(scope='module')
def case():
  """Random padded ground truth, effdet's labels for it and random outputs."""
  rng = np.random.default_rng(0)
  corner = rng.uniform(0, 1, (_BATCH, _MAX_BOXES, 2)) * np.array(_SIZE)
  sides = rng.uniform(4, 80, (_BATCH, _MAX_BOXES, 2))
  gt_boxes = np.concatenate(
      [corner, np.minimum(corner + sides, _SIZE)], -1).astype(np.float32)
  gt_classes = rng.integers(0, _CLASSES, (_BATCH, _MAX_BOXES))
  valid = rng.uniform(size=(_BATCH, _MAX_BOXES)) > 0.2
  reference = effdet_anchors.Anchors(
      3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 4.0, _SIZE)
  labeler = effdet_anchors.AnchorLabeler(reference, _CLASSES)
  # effdet's labels are 1-based; -1 marks padding.
  ref_targets = labeler.batch_label_anchors(
      torch.from_numpy(gt_boxes),
      torch.from_numpy(np.where(valid, gt_classes + 1, -1)))
  sizes = anchors_lib.feature_sizes(_SIZE, 7)[3:]
  class_outputs = [rng.normal(size=(_BATCH, h, w, 9 * _CLASSES)).astype(
      np.float32) for h, w in sizes]
  box_outputs = [rng.normal(0, 0.2, (_BATCH, h, w, 36)).astype(np.float32)
                 for h, w in sizes]
  anchors = jnp.asarray(anchors_lib.anchor_boxes(_SIZE))
  targets = jax.jit(targets_lib.assign_batch)(anchors, gt_boxes, gt_classes,
                                              valid)
  return dict(gt_boxes=gt_boxes, gt_classes=gt_classes, valid=valid,
              anchors=anchors, targets=targets, ref_targets=ref_targets,
              class_outputs=class_outputs, box_outputs=box_outputs)


def test_targets_equal_effdet_labeler(case):
  ref_classes, ref_boxes, ref_positives = case['ref_targets']
  targets = case['targets']
  np.testing.assert_array_equal(
      targets.classes,
      np.concatenate([c.reshape(_BATCH, -1).numpy() for c in ref_classes], 1))
  np.testing.assert_allclose(
      targets.boxes,
      np.concatenate([b.reshape(_BATCH, -1, 4).numpy() for b in ref_boxes],
                     1), atol=1e-6)
  np.testing.assert_array_equal(targets.num_positives, ref_positives.numpy())
  assert targets.num_positives.min() > 0


def test_every_valid_box_gets_its_best_anchor(case):
  # A tiny box overlaps no anchor at IoU 0.5, yet is matched.
  gt_boxes = jnp.array([[10.0, 10.0, 13.0, 12.0], [0, 0, 0, 0]])
  targets = targets_lib.assign(case['anchors'], gt_boxes, jnp.array([3, 0]),
                               jnp.array([True, False]))
  best = jnp.argmax(boxes_lib.iou(gt_boxes[:1], case['anchors'])[0])
  assert float(targets.num_positives) == 1
  assert int(targets.classes[best]) == 3
  np.testing.assert_allclose(
      boxes_lib.decode(targets.boxes[best], case['anchors'][best]),
      gt_boxes[0], atol=1e-3)


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_losses_equal_effdet_loss(case, label_smoothing):
  ref_classes, ref_boxes, ref_positives = case['ref_targets']
  reference = effdet_loss.loss_fn(
      [torch.from_numpy(c.transpose(0, 3, 1, 2))
       for c in case['class_outputs']],
      [torch.from_numpy(b.transpose(0, 3, 1, 2))
       for b in case['box_outputs']],
      ref_classes, ref_boxes, ref_positives, _CLASSES, alpha=0.25, gamma=1.5,
      delta=0.1, box_loss_weight=50.0, label_smoothing=label_smoothing)
  ours = losses.detection_loss(case['class_outputs'], case['box_outputs'],
                               case['targets'], _CLASSES,
                               label_smoothing=label_smoothing)
  np.testing.assert_allclose(ours, [float(r) for r in reference], rtol=1e-5)


def test_degenerate_ground_truth_gives_finite_losses_and_gradients(case):
  # Zero-area, inverted and padding boxes marked valid, and an empty image.
  gt_boxes = jnp.array([[[20.0, 30, 20, 60], [50, 50, 50, 50],
                         [90, 90, 40, 40], [0, 0, 0, 0]]] * 2)
  valid = jnp.array([[True, True, True, True], [False] * 4])
  targets = targets_lib.assign_batch(case['anchors'], gt_boxes,
                                     jnp.zeros((2, 4), int), valid)
  np.testing.assert_array_equal(targets.num_positives, [0, 0])
  assert not np.any(np.asarray(targets.boxes))
  outputs = [c[:2] for c in case['class_outputs']]
  box_outputs = [b[:2] for b in case['box_outputs']]

  def total(outputs, box_outputs):
    return losses.detection_loss(outputs, box_outputs, targets,
                                 _CLASSES).total

  value, grads = jax.value_and_grad(total, argnums=(0, 1))(outputs,
                                                           box_outputs)
  assert np.isfinite(value) and value > 0
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_box_coding_round_trips():
  rng = np.random.default_rng(1)
  anchors = rng.uniform(0, 50, (100, 2))
  anchors = np.concatenate([anchors, anchors + rng.uniform(5, 50, (100, 2))],
                           -1)
  boxes = np.concatenate([anchors[:, :2] + rng.normal(0, 3, (100, 2)),
                          anchors[:, 2:] + rng.uniform(0, 3, (100, 2))], -1)
  codes = boxes_lib.encode(jnp.asarray(boxes, jnp.float32),
                           jnp.asarray(anchors, jnp.float32))
  np.testing.assert_allclose(boxes_lib.decode(codes, anchors), boxes,
                             atol=1e-4)


def test_iou_of_hand_computed_boxes():
  boxes1 = jnp.array([[0.0, 0, 10, 10], [0, 0, 0, 0]])
  boxes2 = jnp.array([[5.0, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]])
  np.testing.assert_allclose(boxes_lib.iou(boxes1, boxes2),
                             [[25 / 175, 1, 0], [0, 0, 0]], rtol=1e-6)
