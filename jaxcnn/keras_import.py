"""Reads Keras NASNet weights (HDF5) with h5py alone, as jaxcnn variables.

Two layouts:
- Legacy HDF5, as `keras.applications` downloads it (`NASNet-mobile.h5`,
  `NASNet-large.h5`) and Keras 2 `save_weights('x.h5')` writes it: a group
  per layer name whose `weight_names` attribute names its datasets.
- Keras 3 `.weights.h5`: `layers/<key>/vars/<i>`, where the key is not the
  layer's name but its class in snake case numbered in the model's layer
  order (`conv2d`, `conv2d_1`, ...; Keras sorts a functional model's layers
  by graph depth, not by construction). That order is in
  `keras_nasnet_layers.json`, listed from Keras 3's `NASNetMobile` and
  `NASNetLarge` (`[l.name for l in model.layers if l.weights]`); the tests
  check it against Keras.

Keras' NASNet-A layer names map onto jaxcnn.models.nasnet (NASNet-A genotype
only): cell ids `stem_1`, `stem_2`, `0`..`N-1`, `reduce_N`, `N+1`..`2N`,
`reduce_2N`, `2N+1`..`3N`; `left`/`right` branches numbered per block.
"""

import functools
import json
import os
import re
from typing import Any

import numpy as np

_ORDER_FILE = os.path.join(os.path.dirname(__file__), 'keras_nasnet_layers.json')

# Variables of each weighted layer class, in Keras' creation order.
_VARIABLES = {
    'conv2d': ('kernel',),
    'separable_conv2d': ('depthwise_kernel', 'pointwise_kernel'),
    'batch_normalization': ('gamma', 'beta', 'moving_mean', 'moving_variance'),
    'dense': ('kernel', 'bias'),
}
# Keras variable -> (collection, Flax leaf).
_LEAVES = {
    'kernel': ('params', 'kernel'), 'bias': ('params', 'bias'),
    'pointwise_kernel': ('params', 'kernel'),
    'depthwise_kernel': ('params', 'kernel'),
    'gamma': ('params', 'scale'), 'beta': ('params', 'bias'),
    'moving_mean': ('batch_stats', 'mean'),
    'moving_variance': ('batch_stats', 'var'),
}
# (cell kind, branch, number) -> (block, side) of the NASNet-A genotype.
_BRANCHES = {
    ('normal', 'left', 1): '0_a', ('normal', 'right', 1): '0_b',
    ('normal', 'left', 2): '1_a', ('normal', 'right', 2): '1_b',
    ('normal', 'left', 5): '4_a',
    ('reduction', 'left', 1): '0_a', ('reduction', 'right', 1): '0_b',
    ('reduction', 'right', 2): '1_b', ('reduction', 'right', 3): '2_b',
    ('reduction', 'left', 4): '4_a',  # Keras' name for block 5's sep3.
}
_ID = r'(stem_[12]|reduce_\d+|\d+)'


def layer_class(name: str) -> str:
  """The snake-case Keras class of a NASNet layer, from its name."""
  if name == 'predictions':
    return 'dense'
  if name.startswith(('stem_bn', 'adjust_bn')) or '_bn_' in name:
    return 'batch_normalization'
  if name.startswith('separable_conv'):
    return 'separable_conv2d'
  return 'conv2d'


@functools.cache
def layer_order(variant: str) -> tuple[str, ...]:
  """Keras' weighted layers of `variant` ('nasnet_mobile', 'nasnet_large')
  in its model's layer order."""
  with open(_ORDER_FILE) as f:
    return tuple(json.load(f)[variant])


def read_weights(path: str, variant: str) -> dict[str, dict[str, np.ndarray]]:
  """{layer name: {variable: array}} from either layout.

  Raises:
    ValueError: not a readable HDF5 file of Keras weights.
  """
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    with h5py.File(path, 'r') as f:
      if 'layer_names' in f.attrs:
        return _read_legacy(f)
      if 'layers' in f:
        return _read_keras3(f['layers'], layer_order(variant))
  except OSError as e:
    raise ValueError(f'Cannot read Keras weights from {path}: {e}') from e
  raise ValueError(f'{path} holds neither legacy HDF5 nor Keras 3 '
                   '.weights.h5 weights.')


def _text(value: Any) -> str:
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


def _read_legacy(f: Any) -> dict[str, dict[str, np.ndarray]]:
  weights = {}
  for layer in map(_text, f.attrs['layer_names']):
    group = f[layer]
    names = [_text(n) for n in group.attrs.get('weight_names', [])]
    if names:
      # 'scope/.../depthwise_kernel:0' -> 'depthwise_kernel'.
      weights[layer] = {n.rsplit('/', 1)[-1].split(':')[0]: np.asarray(group[n])
                        for n in names}
  return weights


def _read_keras3(group: Any, order: tuple[str, ...]
                 ) -> dict[str, dict[str, np.ndarray]]:
  counts: dict[str, int] = {}
  weights = {}
  for layer in order:
    cls = layer_class(layer)
    count = counts.get(cls, 0)
    counts[cls] = count + 1
    key = cls if count == 0 else f'{cls}_{count}'
    if key not in group:
      raise ValueError(f'The Keras 3 weights have no layers/{key} ({layer}).')
    variables = group[key]['vars']
    weights[layer] = {name: np.asarray(variables[str(i)])
                      for i, name in enumerate(_VARIABLES[cls])
                      if str(i) in variables}
  return weights


def _cell_name(cell_id: str, num_cells: int) -> str:
  if cell_id.startswith('stem_'):
    return f'stem_{int(cell_id[-1]) - 1}'
  if cell_id.startswith('reduce_'):
    return f'reduction_{int(cell_id[len("reduce_"):]) // num_cells - 1}'
  index = int(cell_id)
  return f'cell_{index - (index > num_cells)}'  # Ids skip reduce_N.


def module_path(layer: str, num_cells: int) -> str | None:
  """jaxcnn module path of a Keras NASNet layer ('/'-separated), or None."""
  fixed = {'stem_conv1': 'stem_conv', 'stem_bn1': 'stem_bn',
           'predictions': 'head'}
  if layer in fixed:
    return fixed[layer]
  rules = (
      (rf'(?:normal|reduction)_conv_1_{_ID}', lambda m: 'base/conv'),
      (rf'(?:normal|reduction)_bn_1_{_ID}', lambda m: 'base/bn'),
      (rf'adjust_conv_([12])_{_ID}', lambda m: f'prev/path{m[1]}_conv'),
      (rf'adjust_conv_projection_{_ID}', lambda m: 'prev/conv'),
      (rf'adjust_bn_{_ID}', lambda m: 'prev/bn'),
      (rf'separable_conv_([12])(_bn)?_(normal|reduction)_(left|right)(\d)_'
       rf'{_ID}', _separable_part),
  )
  for pattern, part in rules:
    match = re.fullmatch(pattern, layer)
    if match:
      path = part(match)
      return path and f'{_cell_name(match.groups()[-1], num_cells)}/{path}'
  return None


def _separable_part(match: re.Match) -> str | None:
  block = _BRANCHES.get((match[3], match[4], int(match[5])))
  if block is None:
    return None
  layer = 'bn' if match[2] else None
  return f'block{block}/{layer or "sep"}_{match[1]}'


def to_flax(weights: dict[str, dict[str, np.ndarray]], num_cells: int
            ) -> tuple[dict[tuple[str, ...], np.ndarray], list[str]]:
  """Flat {(collection, *path, leaf): array} and the layers that fit nowhere.

  Depthwise kernels (k, k, C, 1) become Flax's (k, k, 1, C); a separable
  layer's two kernels go to the op's `depthwise_i` and `pointwise_i`.
  """
  flat, problems = {}, []
  for layer, variables in weights.items():
    path = module_path(layer, num_cells)
    if path is None:
      problems.append(f'unexpected layer {layer}')
      continue
    for name, value in variables.items():
      collection, leaf = _LEAVES[name]
      target = path
      if name == 'depthwise_kernel':
        target = path.replace('/sep_', '/depthwise_')
        value = value.transpose(0, 1, 3, 2)
      elif name == 'pointwise_kernel':
        target = path.replace('/sep_', '/pointwise_')
      flat[(collection, *target.split('/'), leaf)] = value.astype(np.float32)
  return flat, problems
