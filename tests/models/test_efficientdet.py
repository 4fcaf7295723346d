"""EfficientDet: parameter counts, output levels, BiFPN wiring and heads.

Equivalence with effdet: tests/detection/test_effdet_import.py.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import effdet_import
from jaxcnn import models
from jaxcnn.models import efficientdet
from jaxcnn.models import lowering
from tests import torch_refs  # noqa: F401  # torchvision, before effdet.

import effdet  # pylint: disable=g-bad-import-order  # After torchvision's fix.

# effdet `tf_efficientdet_d*` with 90 classes, measured.
_PARAM_COUNTS = {
    'efficientdet_d0': 3_880_067,
    'efficientdet_d1': 6_625_898,
    'efficientdet_d2': 8_097_039,
    'efficientdet_d3': 12_032_296,
    'efficientdet_d4': 20_723_675,
    'efficientdet_d5': 33_653_315,
    'efficientdet_d6': 51_871_782,
    'efficientdet_d7': 51_871_782,
    'efficientdet_d7x': 77_147_166,
}


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _shapes(model, side: int = 256):
  """(outputs, variables) shapes of `model.init_with_output`."""
  return jax.eval_shape(model.init_with_output, jax.random.key(0),
                        jnp.zeros((1, side, side, 3)))


@pytest.mark.parametrize('name', sorted(_PARAM_COUNTS))
def test_trainable_param_count_and_output_levels(name):
  model = models.create(name, num_classes=90)
  (class_outputs, box_outputs), variables = _shapes(model)
  assert _count(variables['params']) == _PARAM_COUNTS[name]
  # D6, D7 and D7x fuse by a plain sum: no fusion weights.
  fusion_weights = [k for k in variables['params']['bifpn_0']
                    if k.endswith('_weights')]
  sums = ('efficientdet_d6', 'efficientdet_d7', 'efficientdet_d7x')
  assert len(fusion_weights) == (0 if name in sums else 8)
  levels = range(3, 9 if name == 'efficientdet_d7x' else 8)
  assert [o.shape for o in class_outputs] == [
      (1, 256 >> level, 256 >> level, 9 * 90) for level in levels]
  assert [o.shape for o in box_outputs] == [
      (1, 256 >> level, 256 >> level, 9 * 4) for level in levels]


def test_symmetric_variant_param_count():
  # effdet's own efficientdet_d0: no bias before its BatchNorms.
  model = models.create('efficientdet_d0', num_classes=90,
                        **effdet_import.model_kwargs('effdet_torch'))
  assert _count(_shapes(model)[1]['params']) == 3_877_763


def test_bifpn_nodes_follow_effdet_wiring():
  # States 0-4 are P3-P7; node j appends state 5 + j.
  assert [(n.level, n.inputs) for n in efficientdet.bifpn_nodes(3, 7)] == [
      (6, (3, 4)), (5, (2, 5)), (4, (1, 6)), (3, (0, 7)),
      (4, (1, 7, 8)), (5, (2, 6, 9)), (6, (3, 5, 10)), (7, (4, 11))]
  effdet_nodes = effdet.config.get_fpn_config('bifpn_fa', 3, 8).nodes
  assert [(n.level, list(n.inputs))
          for n in efficientdet.bifpn_nodes(3, 8)] == [
              (n['feat_level'], list(n['inputs_offsets']))
              for n in effdet_nodes]


def test_head_biases_start_at_the_class_prior():
  head = efficientdet.Head(
      outputs=3, channels=8, repeats=2, redundant_bias=True,
      norm=functools.partial(nn.BatchNorm, use_running_average=True),
      lowering=lowering.XLA,
      bias_init=efficientdet.class_bias_init)
  features = [jnp.zeros((1, 4, 4, 8)), jnp.zeros((1, 2, 2, 8))]
  outputs, variables = jax.jit(head.init_with_output)(jax.random.key(0),
                                                     features)
  params = variables['params']
  np.testing.assert_allclose(params['predict']['pointwise']['bias'],
                             -math.log(99), rtol=1e-6)
  for out in outputs:  # Zero features: every level predicts the prior.
    np.testing.assert_allclose(out, -math.log(99), rtol=1e-6)
  # Convs shared across the two levels, BatchNorm per level and repeat.
  assert sorted(params) == ['bn_0_0', 'bn_0_1', 'bn_1_0', 'bn_1_1', 'conv_0',
                            'conv_1', 'predict']


def test_nasnet_backbone_feeds_the_same_levels():
  model = models.create('efficientdet_d0', num_classes=10,
                        backbone='nasnet_mobile')
  (class_outputs, _), variables = _shapes(model)
  assert [o.shape for o in class_outputs] == [
      (1, 256 >> level, 256 >> level, 90) for level in range(3, 8)]
  # NASNet-A Mobile's C3-C5 (264, 528, 1056 channels) are resampled.
  assert variables['params']['bifpn_0']['node_1_resample_2']['conv'][
      'kernel'].shape == (1, 1, 1056, 64)
