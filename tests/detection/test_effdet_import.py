"""effdet weights converted by jaxcnn.effdet_import reproduce effdet's
class and box outputs."""

import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from jaxcnn import effdet_import
from jaxcnn import predict_detection
from tests import torch_refs

import effdet  # pylint: disable=g-bad-import-order  # After torchvision's fix.

pytestmark = pytest.mark.cost_seconds(60)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
_SIZE = (128, 256)  # Non-square; effdet's image_size must be the input's.


@functools.cache
def _reference(name: str) -> torch.nn.Module:
  """effdet's D0 `name` with random weights, BatchNorm statistics and BiFPN
  fusion weights (ones would hide mixed-up edges)."""
  torch.manual_seed(0)
  model = effdet.create_model(name, pretrained_backbone=False,
                              num_classes=90, image_size=_SIZE).eval()
  torch_refs.randomize_batch_norm(model)
  with torch.no_grad():
    for key, param in model.named_parameters():
      if key.endswith('edge_weights'):
        param.uniform_(-0.5, 1.5)  # Some negative: relu must clip them.
      elif key.endswith('bias'):
        param.normal_(0, 0.1)
  return model


# effdet_torch: symmetric padding (its max-pools pad (1, 1) where TF SAME
# pads (0, 1)), no bias before BatchNorm, torch BatchNorm in the backbone.
@pytest.mark.parametrize('source,reference_name', [
    ('effdet', 'tf_efficientdet_d0'), ('effdet_torch', 'efficientdet_d0')])
def test_matches_effdet_on_random_weights(source, reference_name):
  reference = _reference(reference_name)
  images = np.random.default_rng(0).normal(size=(2, *_SIZE, 3)).astype(
      np.float32)
  with torch.no_grad():
    ref_class, ref_box = reference(torch.from_numpy(images.transpose(0, 3, 1,
                                                                     2)))
  # A DetBenchPredict's state_dict: the model's keys under 'model.'.
  module, variables = effdet_import.from_effdet(
      'efficientdet_d0', effdet.DetBenchPredict(reference).state_dict(),
      source)
  assert module.num_classes == 90
  with jax.default_matmul_precision('highest'):
    class_outputs, box_outputs = jax.jit(module.apply)(variables, images)
  for ours, ref in zip([*class_outputs, *box_outputs],
                       [*ref_class, *ref_box]):
    ref = ref.numpy().transpose(0, 2, 3, 1)
    assert ref.std() > 0.05  # Not a constant map.
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_conversion_lists_every_misfit_key():
  state_dict = dict(_reference('tf_efficientdet_d0').state_dict())
  del state_dict['fpn.cell.1.fnode.4.combine.edge_weights']
  state_dict['fpn.cell.9.fnode.0.combine.edge_weights'] = torch.ones(2)
  state_dict['box_net.predict.conv_pw.bias'] = torch.zeros(35)
  with pytest.raises(ValueError) as error:
    effdet_import.from_effdet('efficientdet_d0', state_dict)
  message = str(error.value)
  assert 'missing params/bifpn_1/node_4_weights' in message
  assert 'unexpected fpn.cell.9.fnode.0.combine.edge_weights' in message
  assert ('shape of box_net.predict.conv_pw.bias: got (35,), expected (36,)'
          in message)


def test_the_convert_cli_writes_a_coco_detector_that_predict_loads(tmp_path):
  """`python -m jaxcnn.convert` on effdet's state_dict (source detected from
  its keys): the variables of from_effdet, and a checkpoint recording COCO's
  90 classes, D0's input size and anchors, and automl's NMS."""
  reference = _reference('tf_efficientdet_d0')
  weights, out = tmp_path / 'd0.pth', tmp_path / 'converted'
  torch.save(reference.state_dict(), weights)
  done = subprocess.run(
      [sys.executable, '-m', 'jaxcnn.convert', '--model=efficientdet_d0',
       f'--weights={weights}', f'--out={out}'], cwd=ROOT, capture_output=True,
      text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == (
      f'Wrote efficientdet_d0 (effdet, 90 classes) to {out}.')
  detector = predict_detection.load(str(out))
  assert detector.meta['task'] == 'detection'
  assert detector.class_names[:3] == ['person', 'bicycle', 'car']
  assert detector.class_names[11] == 'unused_12'
  assert detector.meta['preprocessing']['image_size'] == 512
  assert detector.meta['anchors'] == {'min_level': 3, 'max_level': 7,
                                      'anchor_scale': 4.0}
  assert detector.meta['postprocess'] == {
      'max_candidates': 5000, 'max_detections': 100,
      'nms_iou_threshold': 0.5, 'nms_method': 'hard', 'soft_nms_sigma': 0.5}
  assert detector.anchors.shape == (49104, 4)
  _, expected = effdet_import.from_effdet('efficientdet_d0',
                                          reference.state_dict())
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(detector.variables), expected)
