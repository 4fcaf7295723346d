"""Anchor target assignment, as effdet's AnchorLabeler: IoU argmax matching
(ArgMaxMatcher, matched and unmatched thresholds 0.5, every ground-truth box
forced onto its best anchor) and Faster R-CNN box targets.

Ground truth comes padded to a fixed number of boxes per image with a
`valid` mask, so shapes are static. Boxes that are padding, not `valid`
(e.g. crowd boxes) or of zero area never match and are never forced: effdet
would force a zero-area box onto anchor 0, whose box target is then
log(1e-7 / anchor side). With unequal thresholds, anchors in between are
IGNORED (the loss skips them), where effdet's labeler makes them background.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcnn.detection import boxes as boxes_lib

MATCH_THRESHOLD = 0.5
BACKGROUND = -1  # Class target of an unmatched anchor.
IGNORED = -2  # Class target of an anchor between the two thresholds.


class Targets(NamedTuple):
  classes: jax.Array  # [..., anchors] int32: class, BACKGROUND or IGNORED.
  boxes: jax.Array  # [..., anchors, 4] encoded; zeros where unmatched.
  num_positives: jax.Array  # [...] float32: matched anchors.


def assign(anchors: jax.Array, gt_boxes: jax.Array, gt_classes: jax.Array,
           valid: jax.Array, matched_threshold: float = MATCH_THRESHOLD,
           unmatched_threshold: float = MATCH_THRESHOLD) -> Targets:
  """One image's targets.

  Args:
    anchors: [A, 4] [y1, x1, y2, x2] (anchors.anchor_boxes).
    gt_boxes: [G, 4] [y1, x1, y2, x2] in the same pixels.
    gt_classes: [G] int, 0-based.
    valid: [G] bool: real, non-crowd boxes.
    matched_threshold: anchors with best IoU >= this are positives.
    unmatched_threshold: anchors with best IoU < this are background; those
      in between are IGNORED.
  """
  valid = valid & (boxes_lib.area(gt_boxes) > 0)
  similarity = jnp.where(valid[:, None], boxes_lib.iou(gt_boxes, anchors), -1)
  best = jnp.max(similarity, axis=0)  # [A]
  matches = jnp.argmax(similarity, axis=0)
  matches = jnp.where(best < unmatched_threshold, BACKGROUND,
                      jnp.where(best < matched_threshold, IGNORED, matches))
  # Each valid box takes its best anchor; the lowest such box wins a tie.
  forced = (jax.nn.one_hot(jnp.argmax(similarity, axis=1), anchors.shape[0],
                           dtype=bool) & valid[:, None])  # [G, A]
  matches = jnp.where(jnp.any(forced, axis=0), jnp.argmax(forced, axis=0),
                      matches)
  positive = matches >= 0
  index = jnp.maximum(matches, 0)
  classes = jnp.where(positive, gt_classes[index].astype(jnp.int32),
                      jnp.where(matches == IGNORED, IGNORED, BACKGROUND))
  codes = boxes_lib.encode(gt_boxes[index], anchors)
  box_targets = jnp.where(positive[:, None], codes, 0)
  return Targets(classes, box_targets,
                 jnp.sum(positive).astype(jnp.float32))


def assign_batch(anchors: jax.Array, gt_boxes: jax.Array,
                 gt_classes: jax.Array, valid: jax.Array, **kwargs) -> Targets:
  """`assign` over a batch: gt_* and valid with a leading batch axis."""
  return jax.vmap(lambda b, c, v: assign(anchors, b, c, v, **kwargs))(
      gt_boxes, gt_classes, valid)
