"""Detections from EfficientDet outputs, inside jit with fixed shapes, as
effdet's DetBenchPredict: the top `max_candidates` (anchor, class) logits,
their anchors' boxes decoded, class-aware greedy hard NMS (or effdet's
Gaussian soft-NMS), the best `max_detections` kept in decreasing score order.

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
# effdet's generate_detections(soft_nms=True): batched_soft_nms with
# method_gaussian=True, its default sigma and score_threshold=.001 (its
# iou_threshold=0.3 only applies to the linear method).
SOFT_NMS_SIGMA = 0.5
SOFT_NMS_SCORE_THRESHOLD = 0.001
NMS_METHODS = ('hard', 'soft')


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


def soft_nms(boxes: jax.Array, scores: jax.Array, classes: jax.Array,
             max_outputs: int, sigma: float = SOFT_NMS_SIGMA,
             score_threshold: float = SOFT_NMS_SCORE_THRESHOLD
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Class-aware Gaussian soft-NMS of one image's boxes (effdet's
  `batched_soft_nms` with method_gaussian=True).

  Each step keeps the best remaining box and multiplies the scores of the
  remaining boxes of its class by exp(-IoU^2 / sigma); a box whose score
  falls to `score_threshold` or below is dropped.

  Args:
    boxes: [N, 4], any corner order consistent across boxes.
    scores: [N] probabilities (the decay and threshold apply to them).
    classes: [N] int.
    max_outputs: boxes to keep at most.

  Returns:
    (indices [max_outputs] into the boxes, their decayed scores
    [max_outputs], valid [max_outputs] bool), in decreasing score order.
  """

  def keep_best(state, _):
    remaining, alive = state
    best = jnp.argmax(jnp.where(alive, remaining, -jnp.inf))
    overlap = boxes_lib.iou(boxes[best][None], boxes)[0]
    decay = jnp.where(classes == classes[best],
                      jnp.exp(-overlap ** 2 / sigma), 1)
    decayed = remaining * decay
    state = decayed, (alive & (decayed > score_threshold)).at[best].set(False)
    return state, (best, remaining[best], alive[best])

  alive = jnp.ones(scores.shape, bool)
  _, (indices, kept_scores, valid) = jax.lax.scan(
      keep_best, (scores, alive), None, length=max_outputs)
  return indices, kept_scores, valid


def detect(class_outputs: Sequence[jax.Array],
           box_outputs: Sequence[jax.Array], anchors: jax.Array,
           num_classes: int, max_candidates: int = MAX_CANDIDATES,
           max_detections: int = MAX_DETECTIONS,
           iou_threshold: float = NMS_IOU_THRESHOLD,
           scale: jax.Array | None = None,
           original_size: jax.Array | None = None,
           nms_method: str = 'hard', soft_nms_sigma: float = SOFT_NMS_SIGMA,
           soft_nms_score_threshold: float = SOFT_NMS_SCORE_THRESHOLD
           ) -> Detections:
  """The batch's detections.

  Args:
    class_outputs, box_outputs: the network's per-level maps.
    anchors: [A, 4] (anchors.anchor_boxes for the input size).
    num_classes: classes of the class maps.
    max_candidates: (anchor, class) logits NMS considers, per image.
    max_detections: detections kept per image.
    iou_threshold: hard NMS overlap above which a box is dropped.
    scale: [batch] original pixels per input pixel; boxes are returned in
      original pixels when given (effdet's `img_scale`).
    original_size: [batch, 2] (height, width) of the original images; boxes
      are clipped to them, before NMS (effdet's `img_size`, which is xy).
    nms_method: 'hard' (`nms`) or 'soft' (`soft_nms`, effdet's
      `soft_nms=True`: scores are the decayed ones).
    soft_nms_sigma, soft_nms_score_threshold: `soft_nms`'s sigma and
      score_threshold.
  """
  if nms_method not in NMS_METHODS:
    raise ValueError(f'nms_method: {nms_method!r} is not one of '
                     f'{NMS_METHODS}.')
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
    if nms_method == 'soft':
      keep, scores, valid = soft_nms(boxes, jax.nn.sigmoid(top), cls,
                                     max_detections, soft_nms_sigma,
                                     soft_nms_score_threshold)
    else:
      keep, valid = nms(boxes, top, cls, max_detections, iou_threshold)
      scores = jax.nn.sigmoid(top[keep])
    return Detections(
        jnp.where(valid[:, None], boxes[keep] * scale, 0),
        jnp.where(valid, scores, 0),
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
