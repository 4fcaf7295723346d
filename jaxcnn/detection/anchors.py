"""RetinaNet / EfficientDet anchors, in effdet's order.

Per level (min_level first), per location (row-major), per anchor: octave
scales 2**(o / num_scales) outer, aspect ratios inner. A level-l anchor of
octave o and aspect (ax, ay) is anchor_scale * stride * 2**(o / num_scales)
times (ay, ax) in (height, width), centred at stride / 2 + i * stride with
stride = image side / level side. Boxes are [y1, x1, y2, x2] in pixels.
"""

from typing import Sequence

import numpy as np

ASPECT_RATIOS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))  # (x, y) factors.
NUM_SCALES = 3


def feature_sizes(image_size: Sequence[int], max_level: int
                  ) -> list[tuple[int, int]]:
  """(height, width) of levels 0..max_level: each halves the last, rounding
  up (TF SAME stride 2)."""
  sizes = [tuple(image_size)]
  for _ in range(max_level):
    sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
  return sizes


def anchor_boxes(image_size: Sequence[int], min_level: int = 3,
                 max_level: int = 7, anchor_scale: float = 4.0,
                 num_scales: int = NUM_SCALES,
                 aspect_ratios: Sequence[tuple[float, float]] = ASPECT_RATIOS
                 ) -> np.ndarray:
  """All anchors, [num_anchors, 4] float32 [y1, x1, y2, x2] in pixels."""
  sizes = feature_sizes(image_size, max_level)
  levels = []
  for level in range(min_level, max_level + 1):
    stride_y, stride_x = (image_size[0] / sizes[level][0],
                          image_size[1] / sizes[level][1])
    ys = np.arange(stride_y / 2, image_size[0], stride_y)
    xs = np.arange(stride_x / 2, image_size[1], stride_x)
    centre_x, centre_y = (a.reshape(-1, 1) for a in np.meshgrid(xs, ys))
    half = np.array([
        (anchor_scale * stride_y * 2 ** (octave / num_scales) * aspect_y / 2,
         anchor_scale * stride_x * 2 ** (octave / num_scales) * aspect_x / 2)
        for octave in range(num_scales)
        for aspect_x, aspect_y in aspect_ratios])  # [anchors, 2]
    boxes = np.stack([centre_y - half[:, 0], centre_x - half[:, 1],
                      centre_y + half[:, 0], centre_x + half[:, 1]], axis=-1)
    levels.append(boxes.reshape(-1, 4))
  return np.concatenate(levels).astype(np.float32)


def anchors_per_level(image_size: Sequence[int], min_level: int = 3,
                      max_level: int = 7,
                      anchors_per_location: int = NUM_SCALES *
                      len(ASPECT_RATIOS)) -> list[int]:
  """How many anchors each level has, in anchor_boxes' order."""
  sizes = feature_sizes(image_size, max_level)
  return [sizes[level][0] * sizes[level][1] * anchors_per_location
          for level in range(min_level, max_level + 1)]
