"""Converts effdet (rwightman/efficientdet-pytorch) weights to jaxcnn
EfficientDet variables.

Sources: 'effdet' for its `tf_efficientdet_d*` (ports of the official TF
weights: TF SAME padding, a conv bias before every BatchNorm, timm
`tf_efficientnet_b*` backbones) and 'effdet_torch' for its own
`efficientdet_d*` (symmetric padding, no redundant biases, a timm
`efficientnet_b*` backbone with torch BatchNorm). The BiFPN and heads use
BatchNorm eps 1e-3 in both.
"""

import re
from typing import Any, Mapping

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import convert
from jaxcnn import models
from jaxcnn.data import catalog
from jaxcnn.models import efficientdet
from jaxcnn.models import layers
from jaxcnn.tasks import detection

SOURCES = ('effdet', 'effdet_torch')
COCO = 'coco/2017'
COCO_CLASSES = 90  # effdet's weights: COCO category ids 1..90.

_SOURCE_FIELDS = {
    'effdet': {},
    'effdet_torch': {
        'padding': 'symmetric', 'redundant_bias': False,
        'backbone_kwargs': {'bn_momentum': layers.TORCH_BN_MOMENTUM,
                            'bn_epsilon': layers.TORCH_BN_EPSILON}},
}

_SEPARABLE = {'conv_dw': 'depthwise', 'conv_pw': 'pointwise'}
# effdet module path -> ours (re templates), backbone excluded.
_RULES: tuple[tuple[str, str], ...] = (
    (r'fpn\.resample\.(\d+)\.conv\.(conv|bn)', 'p{level}_resample/\\2'),
    (r'fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.resample\.(\d+)\.conv\.'
     r'(conv|bn)', r'bifpn_\1/node_\2_resample_\3/\4'),
    (r'fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.(conv_dw|conv_pw)',
     r'bifpn_\1/node_\2_conv/\3'),
    (r'fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.bn',
     r'bifpn_\1/node_\2_bn'),
    (r'(class_net|box_net)\.conv_rep\.(\d+)\.(conv_dw|conv_pw)',
     r'\1/conv_\2/\3'),
    (r'(class_net|box_net)\.bn_rep\.(\d+)\.(\d+)\.bn', r'\1/bn_\2_\3'),
    (r'(class_net|box_net)\.predict\.(conv_dw|conv_pw)', r'\1/predict/\2'),
)
_EDGE_WEIGHTS = re.compile(r'fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.'
                           r'edge_weights')


def checkpoint_meta(module: nn.Module, name: str,
                    source: str) -> dict[str, Any]:
  """What a converted checkpoint records for predict.py and fine-tuning:
  effdet's COCO setup (90 classes = category ids 1..90, ImageNet
  normalisation, the variant's anchors, automl's post-processing)."""
  coco = module.num_classes == COCO_CLASSES
  return {
      'task': 'detection', 'num_classes': module.num_classes,
      'dataset': COCO if coco else None,
      'class_names': list(catalog.COCO_CLASS_NAMES) if coco else None,
      'model_kwargs': model_kwargs(source),
      **detection.inference_meta(
          efficientdet.IMAGE_SIZES[name], catalog.IMAGENET_MEAN,
          catalog.IMAGENET_STD, module.max_level,
          efficientdet.ANCHOR_SCALES[name])}


def model_kwargs(source: str) -> dict[str, Any]:
  """EfficientDet fields (beyond the defaults) that `source`'s weights need."""
  if source not in _SOURCE_FIELDS:
    raise ValueError(f'Unknown source {source!r} for EfficientDet. Known '
                     f'sources: {", ".join(SOURCES)}.')
  return dict(_SOURCE_FIELDS[source])


def _module_path(module: str) -> str | None:
  """Our '/'-separated module path of an effdet module path."""
  if module.startswith('backbone.'):
    inner = convert.module_path(convert.EFFICIENTNET_RULES['timm'],
                                module.removeprefix('backbone.'))
    return inner and f'backbone/{inner}'
  for pattern, template in _RULES:
    match = re.fullmatch(pattern, module)
    if match:
      if '{level}' in template:  # effdet counts levels from min_level.
        template = template.format(
            level=int(match[1]) + efficientdet.MIN_LEVEL)
      return '/'.join(_SEPARABLE.get(part, part)
                      for part in match.expand(template).split('/'))
  return None


def _flax_key(key: str, expected: Mapping[tuple[str, ...], tuple]
              ) -> tuple[str, ...] | None:
  """The (collection, *path, leaf) of an effdet key, None if unknown."""
  edge = _EDGE_WEIGHTS.fullmatch(key)
  if edge:
    return ('params', f'bifpn_{edge[1]}', f'node_{edge[2]}_weights')
  prefix, _, leaf = key.rpartition('.')
  path = _module_path(prefix)
  if path is None:
    return None
  parts = tuple(path.split('/'))
  target = convert.reference_target(
      leaf, ('params', *parts, 'scale') in expected)
  return target and (target[0], *parts, target[1])


def _expected_shapes(module: nn.Module) -> dict[tuple[str, ...], tuple]:
  side = 2 ** module.max_level
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, side, side, module.in_channels)))
  return {k: v.shape for k, v in
          traverse_util.flatten_dict(dict(shapes)).items()}


def from_effdet(name: str, state_dict: Mapping[str, Any],
                source: str = 'effdet', num_classes: int | None = None,
                **overrides: Any) -> tuple[nn.Module, dict]:
  """The jaxcnn EfficientDet `name` set up like `source` and its variables.

  Args:
    name: 'efficientdet_d0' ... 'efficientdet_d7x'.
    state_dict: effdet key -> numpy array or torch tensor (the keys of
      `effdet.create_model(...).state_dict()`, or of a `DetBench*`'s
      `.model`).
    source: one of SOURCES.
    num_classes: classes; read from the class predictor when None.
    **overrides: other model fields.

  Returns:
    (module, {'params', 'batch_stats'}) with numpy leaves.

  Raises:
    ValueError: unknown model or source, or weights that do not fit the model
      (every missing, unexpected and mis-shaped key listed in one error).
  """
  if name not in efficientdet.IMAGE_SIZES:
    raise ValueError(f'Cannot convert model {name!r} from effdet. '
                     f'Convertible models: '
                     f'{", ".join(efficientdet.IMAGE_SIZES)}.')
  fields = {**model_kwargs(source), **overrides}
  # A DetBench's keys: the model's under 'model.', and its anchors.
  state_dict = {k.removeprefix('model.'): v for k, v in state_dict.items()
                if k != 'anchors.boxes'}
  if num_classes is None:
    predictor = state_dict.get('class_net.predict.conv_pw.weight')
    if predictor is None:
      convert.raise_misfit(name, source,
                           ['missing class_net.predict.conv_pw.weight'])
    num_classes = int(np.shape(predictor)[0]) // efficientdet.NUM_ANCHORS
  module = models.create(name, num_classes=num_classes, **fields)
  expected = _expected_shapes(module)
  flat, problems = {}, []
  for key, value in state_dict.items():
    if key.endswith('num_batches_tracked'):
      continue
    full = _flax_key(key, expected)
    if full not in expected:
      problems.append(f'unexpected {key}')
      continue
    value = convert.to_numpy(value)
    want = convert.reference_shape(expected[full])
    if value.shape != want:
      problems.append(f'shape of {key}: got {value.shape}, expected {want}')
      continue
    flat[full] = convert.to_flax(value.astype(np.float32), None)
  problems += [f'missing {"/".join(k)}' for k in expected if k not in flat]
  if problems:
    convert.raise_misfit(name, source, problems)
  return module, {'batch_stats': {}, **traverse_util.unflatten_dict(flat)}
