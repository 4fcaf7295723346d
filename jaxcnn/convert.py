"""Converts torchvision / timm / Keras weights into jaxcnn variables and
checkpoints.

Library: `from_torch(name, state_dict)` and `from_keras(name, path)` return
the jaxcnn module configured like the reference (padding, BatchNorm settings)
and its variables.

CLI, writing a checkpoint that `train.py --config.init_from=DIR` and
predict.py accept:

  python -m jaxcnn.convert --model=resnet50 --source=torchvision \
      --weights=resnet50.pth --out=DIR
  python -m jaxcnn.convert --model=efficientdet_d0 --source=effdet \
      --weights=tf_efficientdet_d0.pth --out=DIR

Sources: 'torchvision'; 'timm' (timm's `tf_efficientnet_b*` ports of the TF
weights: TF SAME padding, BatchNorm eps 1e-3; and timm's `resnet*`, whose keys
are torchvision's); 'timm_torch' (timm's own torch-trained `efficientnet_b*`:
symmetric padding, torch BatchNorm). The timm sources share key names, so
timm EfficientNet keys are taken as 'timm' unless told otherwise. timm's
`nasnetalarge` is 'timm' for nasnet_large. 'keras': Keras' NASNetMobile /
NASNetLarge HDF5 weights (legacy `.h5` or Keras 3 `.weights.h5`, read with
h5py alone, jaxcnn.keras_import); `--source=auto` takes `.h5` files as Keras.
Keras' top is a softmax; jaxcnn returns the logits. 'effdet' /
'effdet_torch': effdet's `tf_efficientdet_d*` / `efficientdet_d*` for
efficientdet_d0 ... d7x (jaxcnn.effdet_import).
"""

import math
import os
import re
from typing import Any, Callable, Mapping, NamedTuple

from absl import app
from absl import flags
from absl import logging
from etils import epath
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxcnn import checkpoint
from jaxcnn import config_check
from jaxcnn import keras_import
from jaxcnn import models
from jaxcnn.models import efficientnet
from jaxcnn.models import layers
from jaxcnn.models import lowering
from jaxcnn.models import nasnet

# effdet's sources (jaxcnn.effdet_import) convert EfficientDet.
SOURCES = ('torchvision', 'timm', 'timm_torch', 'keras', 'effdet',
           'effdet_torch')
_DETECTOR_PREFIX = 'efficientdet_'
FLAGS = flags.FLAGS

# Problems the CLI's one-line error lists.
_MAX_LISTED = 8

# A rule maps a reference module path (the key without its last `.leaf`)
# fully matching `pattern` to our '/'-separated module path: a `re` template,
# or a function of the match returning None for an unknown module.
Rule = tuple[str, str | Callable[[re.Match], str | None]]

_RESNET_RULES: tuple[Rule, ...] = (
    (r'(conv1|bn1)', r'\1'),
    (r'fc', 'head'),
    (r'layer(\d)\.(\d+)\.downsample\.0', r'layer\1_\2/downsample_conv'),
    (r'layer(\d)\.(\d+)\.downsample\.1', r'layer\1_\2/downsample_bn'),
    (r'layer(\d)\.(\d+)\.((?:conv|bn)\d)', r'layer\1_\2/\3'),
)
_ALEXNET_RULES: tuple[Rule, ...] = (
    (r'features\.(\d+)', r'features_\1'),
    (r'classifier\.(1|4)', r'classifier_\1'),
    (r'classifier\.6', 'head'),
)
_SQUEEZENET_RULES: tuple[Rule, ...] = (
    (r'features\.0', 'features_0'),
    (r'features\.(\d+)\.(squeeze|expand1x1|expand3x3)', r'features_\1/\2'),
    (r'classifier\.1', 'head'),
)

# MBConv parts by reference sub-path: [0] for the first stage's depthwise
# separable blocks (expand ratio 1 in every variant), [1] for the others.
_TV_MBCONV = (
    {'0.0': 'dw_conv', '0.1': 'dw_bn', '1.fc1': 'se_reduce',
     '1.fc2': 'se_expand', '2.0': 'project_conv', '2.1': 'project_bn'},
    {'0.0': 'expand_conv', '0.1': 'expand_bn', '1.0': 'dw_conv',
     '1.1': 'dw_bn', '2.fc1': 'se_reduce', '2.fc2': 'se_expand',
     '3.0': 'project_conv', '3.1': 'project_bn'},
)
_TIMM_MBCONV = (
    {'conv_dw': 'dw_conv', 'bn1': 'dw_bn', 'se.conv_reduce': 'se_reduce',
     'se.conv_expand': 'se_expand', 'conv_pw': 'project_conv',
     'bn2': 'project_bn'},
    {'conv_pw': 'expand_conv', 'bn1': 'expand_bn', 'conv_dw': 'dw_conv',
     'bn2': 'dw_bn', 'se.conv_reduce': 'se_reduce',
     'se.conv_expand': 'se_expand', 'conv_pwl': 'project_conv',
     'bn3': 'project_bn'},
)


def _mbconv(parts: tuple[dict[str, str], ...], stage_offset: int
            ) -> Callable[[re.Match], str | None]:
  """Maps a (stage, block, part) match to `blocks_{stage}_{block}/{part}`."""

  def rule(match: re.Match) -> str | None:
    stage = int(match[1]) - stage_offset
    part = parts[stage > 0].get(match[3])
    return part and f'blocks_{stage}_{match[2]}/{part}'

  return rule


EFFICIENTNET_RULES: dict[str, tuple[Rule, ...]] = {
    'torchvision': (
        (r'features\.0\.0', 'stem_conv'),
        (r'features\.0\.1', 'stem_bn'),
        (r'features\.([1-7])\.(\d+)\.block\.(.+)', _mbconv(_TV_MBCONV, 1)),
        (r'features\.8\.0', 'head_conv'),
        (r'features\.8\.1', 'head_bn'),
        (r'classifier\.1', 'head'),
    ),
    'timm_torch': (
        (r'conv_stem', 'stem_conv'),
        (r'bn1', 'stem_bn'),
        (r'blocks\.(\d)\.(\d+)\.(.+)', _mbconv(_TIMM_MBCONV, 0)),
        (r'conv_head', 'head_conv'),
        (r'bn2', 'head_bn'),
        (r'classifier', 'head'),
    ),
}
EFFICIENTNET_RULES['timm'] = EFFICIENTNET_RULES['timm_torch']

# timm nasnetalarge: cells by name, their parts, separable branch parts.
_TIMM_NASNET_CELLS = {'cell_stem_': 'stem_', 'cell_': 'cell_',
                      'reduction_cell_': 'reduction_'}
_TIMM_NASNET_PARTS = {
    'conv_1x1.conv': 'base/conv', 'conv_1x1.bn': 'base/bn',
    'conv_prev_1x1.conv': 'prev/conv', 'conv_prev_1x1.bn': 'prev/bn',
    'path_1.conv': 'prev/path1_conv', 'path_2.conv': 'prev/path2_conv',
    'final_path_bn': 'prev/bn'}
_TIMM_NASNET_BRANCH = {
    part: f'{name}_{i}' for i in (1, 2)
    for part, name in ((f'separable_{i}.depthwise_conv2d', 'depthwise'),
                       (f'separable_{i}.pointwise_conv2d', 'pointwise'),
                       (f'bn_sep_{i}', 'bn'))}


def _timm_nasnet_cell(match: re.Match) -> str | None:
  cell = _TIMM_NASNET_CELLS[match[1]] + match[2]
  if match[3] in _TIMM_NASNET_PARTS:
    return f'{cell}/{_TIMM_NASNET_PARTS[match[3]]}'
  branch = re.fullmatch(r'comb_iter_(\d)_(left|right)\.(.+)', match[3])
  part = branch and _TIMM_NASNET_BRANCH.get(branch[3])
  if not part:
    return None
  side = {'left': 'a', 'right': 'b'}[branch[2]]
  return f'{cell}/block{branch[1]}_{side}/{part}'


_NASNET_RULES: dict[str, tuple[Rule, ...]] = {
    'timm': (
        (r'conv0\.conv', 'stem_conv'),
        (r'conv0\.bn', 'stem_bn'),
        (r'(cell_stem_|cell_|reduction_cell_)(\d+)\.(.+)', _timm_nasnet_cell),
        (r'last_linear', 'head'),
    ),
    'keras': (),  # Keras weights come through from_keras, by layer name.
}

_TORCH_BN = {'bn_momentum': layers.TORCH_BN_MOMENTUM,
             'bn_epsilon': layers.TORCH_BN_EPSILON}
# torchvision builds B5-B7 with TF BatchNorm settings, B0-B4 with torch's.
_TV_TF_BN = ('efficientnet_b5', 'efficientnet_b6', 'efficientnet_b7')


def _efficientnet_overrides(name: str, source: str) -> dict[str, Any]:
  if source == 'timm':
    return {}
  bn = {} if source == 'torchvision' and name in _TV_TF_BN else _TORCH_BN
  return {'padding': 'symmetric', **bn}


def _nasnet_overrides(name: str, source: str) -> dict[str, Any]:
  del name  # Every NASNet takes the reference's border behaviour.
  return {'padding': source}


class _Family(NamedTuple):
  rules: Mapping[str, tuple[Rule, ...]]  # Per source.
  overrides: Callable[[str, str], dict[str, Any]] = lambda name, source: {}
  # Dense layers after a flatten: torch's (C, H, W) input order.
  chw_inputs: Mapping[str, tuple[int, int, int]] = {}


_FAMILIES = {
    'resnet': _Family({'torchvision': _RESNET_RULES, 'timm': _RESNET_RULES}),
    'alexnet': _Family({'torchvision': _ALEXNET_RULES},
                       chw_inputs={'classifier_1': (256, 6, 6)}),
    'squeezenet': _Family({'torchvision': _SQUEEZENET_RULES}),
    'efficientnet': _Family(EFFICIENTNET_RULES, _efficientnet_overrides),
    'nasnet': _Family(_NASNET_RULES, _nasnet_overrides),
}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Eval preprocessing of each source's default weights: (crop, resize,
# interpolation), mean/std ImageNet's unless listed in _MEAN_STD.
_TV_EFFICIENTNET_SIZES = ((224, 256), (240, 256), (288, 288), (300, 320),
                          (380, 384), (456, 456), (528, 528), (600, 600))
_TF_CROP_PCT = (0.875, 0.882, 0.89, 0.904, 0.922, 0.934, 0.942, 0.949)
_TIMM_EFFICIENTNET = ((224, 0.875), (240, 0.9), (256, 0.875), (288, 0.875),
                      (320, 0.875), (448, 1.0))
_PREPROCESSING = {
    **{('torchvision', name): (224, 256, 'bilinear')
       for name in ('alexnet', 'squeezenet1_0', 'squeezenet1_1', 'resnet18',
                    'resnet34', 'resnet50', 'resnet101', 'resnet152')},
    **{('timm', f'resnet{depth}'): (224, math.floor(224 / 0.95), 'bicubic')
       for depth in (18, 34, 50, 101, 152)},
    **{('torchvision', f'efficientnet_b{i}'): (crop, resize, 'bicubic')
       for i, (crop, resize) in enumerate(_TV_EFFICIENTNET_SIZES)},
    **{('timm_torch', f'efficientnet_b{i}'): (crop, math.floor(crop / pct),
                                        'bicubic')
       for i, (crop, pct) in enumerate(_TIMM_EFFICIENTNET)},
    **{('timm', f'efficientnet_b{i}'): (
        efficientnet.IMAGE_SIZES[f'efficientnet_b{i}'],
        math.floor(efficientnet.IMAGE_SIZES[f'efficientnet_b{i}'] / pct),
        'bicubic') for i, pct in enumerate(_TF_CROP_PCT)},
    # timm's nasnetalarge crop_pct 0.911; Keras (slim): central crop 0.875.
    ('timm', 'nasnet_large'): (331, math.floor(331 / 0.911), 'bicubic'),
    **{('keras', name): (nasnet.IMAGE_SIZES[name],
                         round(nasnet.IMAGE_SIZES[name] / 0.875), 'bilinear')
       for name in ('nasnet_mobile', 'nasnet_large')},
}
_MEAN_STD = {('timm_torch', 'efficientnet_b1'): ((0.5,) * 3, (0.5,) * 3),
             **{key: ((0.5,) * 3, (0.5,) * 3)
                for key in (('timm', 'nasnet_large'), ('keras', 'nasnet_mobile'),
                            ('keras', 'nasnet_large'))}}


def preprocessing(name: str, source: str) -> dict[str, Any]:
  """Eval preprocessing the source's default weights expect (0-1 scale).

  Resize the shorter side to `resize_size`, centre-crop `crop_size`, then
  normalise with `mean`/`std`. torchvision: its IMAGENET1K_V1 weights (V2
  weights resize ResNets to 232, EfficientNet-B1 bilinearly to 255). Empty if
  the source publishes no such weights.
  """
  if (source, name) not in _PREPROCESSING:
    return {}
  crop, resize, interpolation = _PREPROCESSING[source, name]
  mean, std = _MEAN_STD.get((source, name), (_IMAGENET_MEAN, _IMAGENET_STD))
  return {'mean': list(mean), 'std': list(std), 'crop_size': crop,
          'resize_size': resize, 'interpolation': interpolation}


def _family(name: str) -> _Family:
  for prefix, family in _FAMILIES.items():
    if name.startswith(prefix):
      return family
  convertible = [n for n in models.names() if n.startswith(tuple(_FAMILIES))]
  raise ValueError(f'Cannot convert model {name!r}. Convertible models: '
                   f'{", ".join(convertible)}.')


def detect_source(keys: Any) -> str:
  """The source whose key names `keys` has; 'torchvision' when they agree.

  timm EfficientNet keys are taken as its tf_efficientnet ports ('timm');
  its own efficientnet_* weights need source='timm_torch'. effdet's keys are
  taken as its tf_efficientdet ports ('effdet'); its efficientdet_* need
  source='effdet_torch'.
  """
  if any(key.startswith(('class_net.', 'model.class_net.')) for key in keys):
    return 'effdet'
  if any(key.startswith(('conv_stem.', 'blocks.', 'conv0.', 'cell_stem_'))
         for key in keys):
    return 'timm'
  return 'torchvision'


def _fields(needed: dict[str, Any], overrides: dict[str, Any]
            ) -> dict[str, Any]:
  """The converted model's fields: what the weights need, this platform's
  lowering (as a run's), then the caller's `overrides`."""
  return {'lowering': lowering.for_platform(jax.default_backend()),
          **needed, **overrides}


def model_kwargs(name: str, source: str) -> dict[str, Any]:
  """Model fields (beyond the defaults) that `source`'s weights need."""
  return _family(name).overrides(name, source)


def module_path(rules: tuple[Rule, ...], module: str) -> str | None:
  for pattern, target in rules:
    match = re.fullmatch(pattern, module)
    if match:
      return target(match) if callable(target) else match.expand(target)
  return None


def to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # A torch tensor.
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def reference_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """The torch shape of a Flax parameter: conv (O, I/g, kh, kw), dense (O, I)."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return shape[::-1] if len(shape) == 2 else shape


def to_flax(value: np.ndarray, chw: tuple[int, int, int] | None
             ) -> np.ndarray:
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2:
    if chw:  # Reorder the inputs from a (C, H, W) to an (H, W, C) flatten.
      value = value.reshape(-1, *chw).transpose(0, 2, 3, 1).reshape(
          value.shape[0], -1)
    return value.T
  return value


def reference_target(leaf: str, is_bn: bool) -> tuple[str, str] | None:
  """(collection, leaf) of a reference parameter or buffer."""
  if leaf == 'weight':
    return ('params', 'scale' if is_bn else 'kernel')
  return {'bias': ('params', 'bias'), 'running_mean': ('batch_stats', 'mean'),
          'running_var': ('batch_stats', 'var')}.get(leaf)


def raise_misfit(name: str, source: str, problems: list[str]) -> None:
  raise ValueError(f'The {source} weights do not fit {name}:\n  ' +
                   '\n  '.join(problems))


def from_torch(name: str, state_dict: Mapping[str, Any],
               source: str | None = None,
               num_classes: int | None = None,
               **overrides: Any) -> tuple[nn.Module, dict]:
  """The jaxcnn model `name` set up like `source` and its converted variables.

  Args:
    name: a jaxcnn model name, e.g. 'resnet50'.
    state_dict: reference key -> numpy array or torch tensor.
    source: one of SOURCES; detected from the key names when None.
    num_classes: classifier outputs; read from the classifier when None.
    **overrides: other model fields, e.g. a narrower network of the same
      layout.

  Returns:
    (module, {'params', 'batch_stats'}) with numpy leaves.

  Raises:
    ValueError: unknown model or source, or weights that do not fit the model
      (every missing, unexpected and mis-shaped key listed in one error).
  """
  source = source or detect_source(state_dict)
  if name.startswith(_DETECTOR_PREFIX):
    from jaxcnn import effdet_import  # pylint: disable=g-import-not-at-top
    return effdet_import.from_effdet(name, state_dict, source, num_classes,
                                     **overrides)
  family = _family(name)
  if source not in family.rules:
    raise ValueError(f'Unknown source {source!r} for {name}. Known sources: '
                     f'{", ".join(family.rules)}.')
  rules = family.rules[source]
  paths = {}
  problems = []
  for key in state_dict:
    prefix, _, leaf = key.rpartition('.')
    if leaf == 'num_batches_tracked':
      continue
    path = module_path(rules, prefix)
    if path is None:
      problems.append(f'unexpected {key}')
    else:
      paths[key] = (path, leaf)
  if num_classes is None:
    heads = [key for key, (path, leaf) in paths.items()
             if (path, leaf) == ('head', 'weight')]
    if not heads:
      raise_misfit(name, source,
                   ['missing the classifier weight', *problems])
    num_classes = int(np.shape(state_dict[heads[0]])[0])

  module = models.create(name, num_classes=num_classes,
                         **_fields(model_kwargs(name, source), overrides))
  expected = _expected_shapes(module)
  flat, matched = {}, set()
  for key, (path, leaf) in paths.items():
    target = reference_target(
        leaf, ('params', *path.split('/'), 'scale') in expected)
    full = target and (target[0], *path.split('/'), target[1])
    if full not in expected:
      problems.append(f'unexpected {key}')
      continue
    matched.add(full)
    value = to_numpy(state_dict[key])
    want = reference_shape(expected[full])
    if value.shape != want:
      problems.append(f'shape of {key}: got {value.shape}, expected {want}')
      continue
    flat[full] = to_flax(value.astype(np.float32),
                          family.chw_inputs.get(path))
  problems += [f'missing {"/".join(k)}' for k in expected if k not in matched]
  if problems:
    raise_misfit(name, source, problems)
  return module, {'batch_stats': {}, **traverse_util.unflatten_dict(flat)}


def _expected_shapes(module: nn.Module) -> dict[tuple[str, ...], tuple]:
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, 64, 64, module.in_channels)))
  return {k: v.shape for k, v in
          traverse_util.flatten_dict(dict(shapes)).items()}


def from_keras(name: str, path: str, num_classes: int | None = None,
               **overrides: Any) -> tuple[nn.Module, dict]:
  """The jaxcnn NASNet `name` set up like Keras and its converted variables.

  Args:
    name: 'nasnet_mobile' or 'nasnet_large' (Keras' NASNetMobile and
      NASNetLarge: the NASNet-A genotype).
    path: a legacy `.h5` or a Keras 3 `.weights.h5` file, with the top.
    num_classes: classifier outputs; read from the classifier when None.
    **overrides: other model fields, e.g. a narrower network of the same
      layout (Keras' `NASNet(penultimate_filters=...)`).

  Returns:
    (module, {'params', 'batch_stats'}) with numpy leaves. The module returns
    logits where Keras' top returns their softmax.

  Raises:
    ValueError: another model, an unreadable file, or weights that do not fit
      the model (every missing, unexpected and mis-shaped weight listed).
  """
  if name not in ('nasnet_mobile', 'nasnet_large'):
    raise ValueError(f'Cannot convert model {name!r} from Keras. Convertible '
                     'models: nasnet_mobile, nasnet_large.')
  weights = keras_import.read_weights(path, name)
  if num_classes is None:
    if 'kernel' not in weights.get('predictions', {}):
      raise_misfit(name, 'keras',
                   ['missing the classifier (predictions) weight'])
    num_classes = int(weights['predictions']['kernel'].shape[-1])
  module = models.create(name, num_classes=num_classes,
                         **_fields(model_kwargs(name, 'keras'), overrides))
  flat, problems = keras_import.to_flax(weights, module.num_cells)
  expected = _expected_shapes(module)
  for key, value in flat.items():
    if key not in expected:
      problems.append(f'unexpected {"/".join(key)}')
    elif value.shape != expected[key]:
      problems.append(f'shape of {"/".join(key)}: got {value.shape}, '
                      f'expected {expected[key]}')
  problems += [f'missing {"/".join(k)}' for k in expected if k not in flat]
  if problems:
    raise_misfit(name, 'keras', problems)
  return module, {'batch_stats': {}, **traverse_util.unflatten_dict(flat)}


def load_state_dict(path: str) -> dict[str, Any]:
  """Reads a `.safetensors` file or a torch `.pth` (raw or under a
  'state_dict' / 'model' key) as numpy arrays or torch tensors."""
  try:
    if path.endswith('.safetensors'):
      from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
      return safetensors_numpy.load_file(path)
    import torch  # pylint: disable=g-import-not-at-top
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'Cannot read weights from {path}: {e}') from e
  for key in ('state_dict', 'model'):
    if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
      loaded = loaded[key]
  if not isinstance(loaded, Mapping):
    raise ValueError(f'{path} holds a {type(loaded).__name__}, not a '
                     'state_dict.')
  return dict(loaded)


def save(out: str, variables: dict, meta: dict[str, Any]) -> None:
  """Writes `variables` and `meta` as a checkpoint `load_variables` reads."""
  path = epath.Path(out)
  if path.exists() and (not path.is_dir() or any(path.iterdir())):
    raise ValueError(f'{out} exists and is not an empty directory; refusing '
                     'to overwrite it.')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path / checkpoint.STATE, variables)
  checkpointer.wait_until_finished()
  ocp.Checkpointer(ocp.JsonCheckpointHandler()).save(
      path / checkpoint.META,
      {**meta, checkpoint.CHECKSUMS: checkpoint.array_checksums(variables)})


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # Orbax is chatty at INFO.
  problem = config_check.output_dir_problem(FLAGS.out, must_be_empty=True)
  if problem:  # Before the weights are read: nothing is written.
    raise SystemExit(f'jaxcnn.convert: error: Cannot write to --out='
                     f'{FLAGS.out} ({problem}); choose a new or empty '
                     'directory.')
  source = None if FLAGS.source == 'auto' else FLAGS.source
  if source is None and FLAGS.weights.endswith('.h5'):
    source = 'keras'
  try:
    if source == 'keras':
      module, variables = from_keras(FLAGS.model, FLAGS.weights)
    else:
      state_dict = load_state_dict(FLAGS.weights)
      source = source or detect_source(state_dict)
      module, variables = from_torch(FLAGS.model, state_dict, source)
    if FLAGS.model.startswith(_DETECTOR_PREFIX):
      from jaxcnn import effdet_import  # pylint: disable=g-import-not-at-top
      meta = effdet_import.checkpoint_meta(module, FLAGS.model, source)
    else:
      meta = {'task': 'classification', 'num_classes': module.num_classes,
              'model_kwargs': model_kwargs(FLAGS.model, source),
              'preprocessing': preprocessing(FLAGS.model, source)}
    save(FLAGS.out, variables, {
        **meta, 'model': FLAGS.model, 'source': source,
        'weights': os.path.abspath(FLAGS.weights)})
  except ValueError as e:
    summary, *problems = str(e).splitlines()
    listed = '; '.join(p.strip() for p in problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    raise SystemExit(
        f'jaxcnn.convert: error: {summary} {listed}'.rstrip() +
        (f'; ... and {more} more.' if more > 0 else '')) from None
  print(f'Wrote {FLAGS.model} ({source}, {module.num_classes} classes) to '
        f'{FLAGS.out}.')


def _define_flags() -> None:
  """CLI flags, defined only when run as a program: other programs importing
  this module may own flags of the same names."""
  flags.DEFINE_string('model', None, 'jaxcnn model name.')
  flags.DEFINE_enum('source', 'auto', ('auto', *SOURCES),
                    'Where the weights come from.')
  flags.DEFINE_string('weights', None, '.pth or .safetensors state_dict; '
                      'Keras .h5 / .weights.h5 for --source=keras.')
  flags.DEFINE_string('out', None, 'New checkpoint directory.')
  flags.mark_flags_as_required(['model', 'weights', 'out'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
