"""Anchors equal effdet's `Anchors`, box by box."""

import numpy as np
import pytest

from jaxcnn.detection import anchors
from tests import torch_refs  # noqa: F401  # torchvision, before effdet.

from effdet import anchors as effdet_anchors  # pylint: disable=g-bad-import-order


def test_d0_at_512_has_49104_anchors_starting_at_the_first_cell():
  boxes = anchors.anchor_boxes((512, 512))
  assert boxes.shape == (49_104, 4)
  np.testing.assert_array_equal(boxes[0], [-12, -12, 20, 20])
  # Second anchor: aspect (1.4, 0.7), i.e. wider than tall.
  np.testing.assert_allclose(boxes[1], [4 - 11.2, 4 - 22.4, 4 + 11.2,
                                        4 + 22.4], rtol=1e-6)
  assert anchors.anchors_per_level((512, 512)) == [36_864, 9_216, 2_304,
                                                   576, 144]


@pytest.mark.parametrize('image_size,anchor_scale,max_level', [
    ((512, 512), 4.0, 7),
    ((128, 256), 5.0, 7),  # D7's anchor scale, non-square.
    ((100, 150), 4.0, 7),  # Sides that do not halve evenly.
    ((512, 768), 4.0, 8),  # D7x's levels 3-8.
])
def test_equal_effdet_anchors(image_size, anchor_scale, max_level):
  reference = effdet_anchors.Anchors(
      3, max_level, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], anchor_scale,
      image_size)
  boxes = anchors.anchor_boxes(image_size, max_level=max_level,
                               anchor_scale=anchor_scale)
  np.testing.assert_array_equal(boxes, reference.boxes.numpy())
  assert sum(anchors.anchors_per_level(image_size, max_level=max_level)) == (
      len(boxes))
