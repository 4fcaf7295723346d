"""Detections from EfficientDet outputs, inside jit with fixed shapes, as
effdet's DetBenchPredict: the top `max_candidates` (anchor, class) logits,
their anchors' boxes decoded, class-aware greedy hard NMS, the best
`max_detections` kept in decreasing score order.

Output boxes are [x1, y1, x2, y2] (xyxy, like effdet's output and
pycocotools after a width/height conversion), whereas anchors and targets
are [y1, x1, y2, x2]. Classes are 0-based here; effdet's output adds 1.
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxcnn.detection import boxes as boxes_lib
from jaxcnn.detection import losses

MAX_CANDIDATES = 5000
MAX_DETECTIONS = 100
NMS_IOU_THRESHOLD = 0.5


class Detections(NamedTuple):
  boxes: jax.Array  # [batch, max_detections, 4] xyxy pixels; 0 if not valid.
  scores: jax.Array  # [batch, max_detections] sigmoid scores; 0 if not valid.
  classes: jax.Array  # [batch, max_detections] int32, 0-based; 0 if not valid.
  valid: jax.Array  # [batch, max_detections] bool.


def nms(boxes: jax.Array, scores: jax.Array, classes: jax.Array,
        max_outputs: int, iou_threshold: float = NMS_IOU_THRESHOLD
        ) -> tuple[jax.Array, jax.Array]:
  """Class-aware greedy hard NMS of one image's boxes.

  A box is dropped when it overlaps a kept box of its class with IoU above
  `iou_threshold` (torchvision's `batched_nms`). Each of `max_outputs`
  steps keeps the best remaining box, so only kept boxes cost work.

  Args:
    boxes: [N, 4], any corner order consistent across boxes ([a1, b1, a2,
      b2]).
    scores: [N]; -inf marks a box that is not a candidate.
    classes: [N] int.
    max_outputs: boxes to keep at most.

  Returns:
    (indices [max_outputs] into the boxes, valid [max_outputs] bool), in
    decreasing score order.
  """

  def keep_best(remaining, _):
    best = jnp.argmax(remaining)
    valid = remaining[best] > -jnp.inf
    overlap = boxes_lib.iou(boxes[best][None], boxes)[0]
    suppressed = (overlap > iou_threshold) & (classes == classes[best])
    remaining = jnp.where(suppressed & valid, -jnp.inf, remaining)
    return remaining.at[best].set(-jnp.inf), (best, valid)

  _, (indices, valid) = jax.lax.scan(keep_best, scores, None,
                                     length=max_outputs)
  return indices, valid


def detect(class_outputs: Sequence[jax.Array],
           box_outputs: Sequence[jax.Array], anchors: jax.Array,
           num_classes: int, max_candidates: int = MAX_CANDIDATES,
           max_detections: int = MAX_DETECTIONS,
           iou_threshold: float = NMS_IOU_THRESHOLD,
           scale: jax.Array | None = None,
           original_size: jax.Array | None = None) -> Detections:
  """The batch's detections.

  Args:
    class_outputs, box_outputs: the network's per-level maps.
    anchors: [A, 4] (anchors.anchor_boxes for the input size).
    num_classes: classes of the class maps.
    max_candidates: (anchor, class) logits NMS considers, per image.
    max_detections: detections kept per image.
    iou_threshold: NMS overlap above which a box is dropped.
    scale: [batch] original pixels per input pixel; boxes are returned in
      original pixels when given (effdet's `img_scale`).
    original_size: [batch, 2] (height, width) of the original images; boxes
      are clipped to them, before NMS (effdet's `img_size`, which is xy).
  """
  logits = losses.flatten_levels(class_outputs, num_classes)
  codes = losses.flatten_levels(box_outputs, 4)
  anchors = jnp.asarray(anchors)
  scale = jnp.ones(logits.shape[:1]) if scale is None else jnp.asarray(scale)

  def one_image(logits, codes, scale, size):
    top, flat = jax.lax.top_k(logits.reshape(-1).astype(jnp.float32),
                              min(max_candidates, logits.size))
    anchor, cls = flat // num_classes, flat % num_classes
    boxes = boxes_lib.yxyx_to_xyxy(boxes_lib.decode(
        codes[anchor].astype(jnp.float32), anchors[anchor]))
    if size is not None:
      limit = jnp.tile(size[::-1] / scale, 2)
      boxes = jnp.clip(boxes, 0, limit)
    keep, valid = nms(boxes, top, cls, max_detections, iou_threshold)
    return Detections(
        jnp.where(valid[:, None], boxes[keep] * scale, 0),
        jnp.where(valid, jax.nn.sigmoid(top[keep]), 0),
        jnp.where(valid, cls[keep], 0).astype(jnp.int32), valid)

  if original_size is None:
    return jax.vmap(lambda l, c, s: one_image(l, c, s, None))(logits, codes,
                                                              scale)
  return jax.vmap(one_image)(logits, codes, scale, original_size)


def as_effdet(detections: Detections) -> jax.Array:
  """effdet's output layout: [batch, max_detections, 6] rows [x1, y1, x2,
  y2, score, class + 1], zero rows after the valid ones."""
  rows = jnp.concatenate([
      detections.boxes, detections.scores[..., None],
      (detections.classes + 1).astype(detections.boxes.dtype)[..., None]],
                         axis=-1)
  return jnp.where(detections.valid[..., None], rows, 0)
