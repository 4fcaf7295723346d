"""EfficientDet losses, as effdet's `loss_fn` (its default, non-legacy focal
loss), computed in float32.

Class loss: focal loss (alpha 0.25, gamma 1.5) summed over anchors and
classes, anchors with an IGNORED target left out; box loss: Huber (delta
0.1) over the non-zero box targets, divided by 4. Both are divided by the
batch's positives + 1; total = class + 50 * box.
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxcnn.detection import targets as targets_lib

ALPHA = 0.25
GAMMA = 1.5
DELTA = 0.1
BOX_LOSS_WEIGHT = 50.0


class Losses(NamedTuple):
  total: jax.Array
  classes: jax.Array
  boxes: jax.Array


def flatten_levels(outputs: Sequence[jax.Array], per_anchor: int
                   ) -> jax.Array:
  """Per-level NHWC maps with anchor * per_anchor + i channels ->
  [batch, anchors, per_anchor] in anchors.anchor_boxes' order."""
  return jnp.concatenate(
      [x.reshape(x.shape[0], -1, per_anchor) for x in outputs], axis=1)


def focal_loss(logits: jax.Array, targets: jax.Array, alpha: float = ALPHA,
               gamma: float = GAMMA, label_smoothing: float = 0.0
               ) -> jax.Array:
  """Elementwise focal loss of logits against 0/1 targets; smoothing moves
  the cross-entropy's targets towards 0.5, not the focal weights."""
  probabilities = jax.nn.sigmoid(logits)
  p_t = targets * probabilities + (1 - targets) * (1 - probabilities)
  alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
  smoothed = targets * (1 - label_smoothing) + 0.5 * label_smoothing
  cross_entropy = (jnp.maximum(logits, 0) - logits * smoothed +
                   jnp.log1p(jnp.exp(-jnp.abs(logits))))
  return alpha_t * (1 - p_t) ** gamma * cross_entropy


def huber_loss(predictions: jax.Array, targets: jax.Array,
               delta: float = DELTA) -> jax.Array:
  """Elementwise: 0.5 e**2 for |e| <= delta, then delta * (|e| - delta/2)."""
  error = jnp.abs(predictions - targets)
  quadratic = jnp.minimum(error, delta)
  return 0.5 * quadratic ** 2 + delta * (error - quadratic)


def detection_loss(class_outputs: Sequence[jax.Array],
                   box_outputs: Sequence[jax.Array],
                   targets: targets_lib.Targets, num_classes: int,
                   alpha: float = ALPHA, gamma: float = GAMMA,
                   delta: float = DELTA,
                   box_loss_weight: float = BOX_LOSS_WEIGHT,
                   label_smoothing: float = 0.0) -> Losses:
  """The batch's losses.

  Args:
    class_outputs, box_outputs: the network's per-level maps.
    targets: targets.assign_batch's, [batch, anchors(, 4)].
    num_classes: classes of the class maps.
  """
  logits = flatten_levels(class_outputs, num_classes).astype(jnp.float32)
  codes = flatten_levels(box_outputs, 4).astype(jnp.float32)
  normalizer = jnp.sum(targets.num_positives) + 1.0
  one_hot = jax.nn.one_hot(targets.classes, num_classes, dtype=jnp.float32)
  class_loss = focal_loss(logits, one_hot, alpha, gamma, label_smoothing)
  counted = targets.classes != targets_lib.IGNORED
  class_loss = jnp.sum(jnp.where(counted[..., None], class_loss, 0))
  box_loss = jnp.sum(jnp.where(targets.boxes != 0,
                               huber_loss(codes, targets.boxes, delta), 0))
  class_loss = class_loss / normalizer
  box_loss = box_loss / (4.0 * normalizer)
  return Losses(class_loss + box_loss_weight * box_loss, class_loss,
                box_loss)
