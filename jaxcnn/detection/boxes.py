"""Box geometry and Faster R-CNN box coding ([ty, tx, th, tw], no scale
factors), as effdet. Boxes are [y1, x1, y2, x2] unless a name says xyxy."""

import jax
import jax.numpy as jnp

# Added to every height and width when encoding: degenerate boxes give
# finite codes (effdet's FasterRcnnBoxCoder eps).
ENCODE_EPSILON = 1e-7


def area(boxes: jax.Array) -> jax.Array:
  """[..., 4] -> [...]; negative sides count as zero."""
  heights = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0)
  widths = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0)
  return heights * widths


def iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
  """Pairwise IoU, [N, 4] x [M, 4] -> [N, M]; 0 where boxes do not overlap
  (so zero-area boxes give 0, never NaN)."""
  top_left = jnp.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
  bottom_right = jnp.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
  sides = jnp.maximum(bottom_right - top_left, 0)
  intersection = sides[..., 0] * sides[..., 1]
  union = area(boxes1)[:, None] + area(boxes2)[None, :] - intersection
  return jnp.where(intersection > 0,
                   intersection / jnp.where(intersection > 0, union, 1), 0)


def _centres_and_sizes(boxes: jax.Array) -> tuple[jax.Array, ...]:
  y1, x1, y2, x2 = jnp.moveaxis(boxes, -1, 0)
  return (y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1


def encode(boxes: jax.Array, anchors: jax.Array) -> jax.Array:
  """[..., 4] boxes relative to anchors of the same shape: [ty, tx, th, tw]."""
  y, x, h, w = _centres_and_sizes(boxes)
  y_a, x_a, h_a, w_a = _centres_and_sizes(anchors)
  h, w = h + ENCODE_EPSILON, w + ENCODE_EPSILON
  h_a, w_a = h_a + ENCODE_EPSILON, w_a + ENCODE_EPSILON
  return jnp.stack([(y - y_a) / h_a, (x - x_a) / w_a, jnp.log(h / h_a),
                    jnp.log(w / w_a)], axis=-1)


def decode(codes: jax.Array, anchors: jax.Array) -> jax.Array:
  """Inverse of encode (without the epsilon): [..., 4] [y1, x1, y2, x2]."""
  y_a, x_a, h_a, w_a = _centres_and_sizes(anchors)
  ty, tx, th, tw = jnp.moveaxis(codes, -1, 0)
  y, x = ty * h_a + y_a, tx * w_a + x_a
  half_h, half_w = jnp.exp(th) * h_a / 2, jnp.exp(tw) * w_a / 2
  return jnp.stack([y - half_h, x - half_w, y + half_h, x + half_w], axis=-1)


def yxyx_to_xyxy(boxes: jax.Array) -> jax.Array:
  return boxes[..., jnp.array([1, 0, 3, 2])]
