"""Post-training compression of a model's weights, for evaluate.py's study.

Both act on the kernels of the convolutions and dense layers (every
parameter named `kernel`, output channels last); biases, BatchNorm
parameters and statistics stay as they are.

- `quantize_int8`: per-output-channel symmetric int8 weights, scale =
  max|w| over all axes but the output one / 127; inference runs on the
  weights dequantised to float (activations stay float).
- `prune`: global magnitude pruning, zeroing the given fraction of all
  kernel weights together, smallest |w| first.

`size_bytes` counts what storing the result takes: int8 kernels with one
float32 scale per output channel, pruned kernels as their remaining values
with a bitmask of one bit per weight, everything else as it is.
"""

import dataclasses
import math
from typing import Any

import jax
import numpy as np

QUANTIZE_MODES = ('int8',)
INT8_MAX = 127
SCALE_BYTES = 4  # float32.


def is_kernel(path: tuple, leaf: Any) -> bool:
  """Whether a parameter is a convolution or dense kernel."""
  name = getattr(path[-1], 'key', getattr(path[-1], 'name', path[-1]))
  return name == 'kernel' and np.ndim(leaf) >= 2


def _kernels(params: Any) -> list[np.ndarray]:
  return [np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_flatten_with_path(params)[0]
          if is_kernel(path, leaf)]


def quantize_int8(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(int8 values, float32 scale per output channel) of `kernel`, so that
  `dequantize` is within scale / 2 of it."""
  kernel = np.asarray(kernel, np.float32)
  peak = np.max(np.abs(kernel), axis=tuple(range(kernel.ndim - 1)))
  scale = (peak / INT8_MAX).astype(np.float32)
  # An all-zero channel quantises to zeros whatever it is divided by.
  values = np.round(kernel / np.where(scale > 0, scale, 1))
  return np.clip(values, -INT8_MAX, INT8_MAX).astype(np.int8), scale


def dequantize(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
  return values.astype(np.float32) * scale


def check_options(quantize: str | None, prune_fraction: float) -> None:
  """Raises a ValueError naming the flag unless both can be applied."""
  if quantize not in (None, *QUANTIZE_MODES):
    raise ValueError(f'--quantize={quantize}: must be one of '
                     f'{", ".join(QUANTIZE_MODES)}.')
  if not 0 <= prune_fraction < 1:
    raise ValueError(f'--prune={prune_fraction}: must be in [0, 1).')


def prune(params: Any, fraction: float) -> Any:
  """`params` with round(fraction * n) of the n kernel weights, those of
  smallest magnitude over all kernels together, set to zero."""
  check_options(None, fraction)
  kernels = _kernels(params)
  magnitudes = np.concatenate([np.abs(k).ravel() for k in kernels])
  count = round(fraction * magnitudes.size)
  if not count:
    return params
  keep = np.ones(magnitudes.size, bool)
  keep[np.argpartition(magnitudes, count - 1)[:count]] = False
  masks = iter(np.split(keep, np.cumsum([k.size for k in kernels])[:-1]))
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: np.where(next(masks).reshape(np.shape(leaf)), leaf,
                                  0).astype(np.asarray(leaf).dtype)
      if is_kernel(path, leaf) else leaf, params)


@dataclasses.dataclass(frozen=True)
class Compressed:
  """Variables to run (kernels dequantised to float) and their stored size."""
  variables: dict
  size_bytes: int
  zeroed_kernel_weights: int
  kernel_weights: int


def _kernel_bytes(kernel: np.ndarray, quantized: bool, sparse: bool) -> int:
  value_bytes = 1 if quantized else kernel.dtype.itemsize
  if sparse:
    stored = np.count_nonzero(kernel) * value_bytes + math.ceil(
        kernel.size / 8)
  else:
    stored = kernel.size * value_bytes
  return int(stored) + (kernel.shape[-1] * SCALE_BYTES if quantized else 0)


def size_bytes(variables: dict, quantized: bool = False,
               sparse: bool = False) -> int:
  """Bytes to store `variables` with int8 kernels (`quantized`) or pruned
  ones as values and bitmask (`sparse`); all arrays as they are without."""
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    leaf = np.asarray(leaf)
    total += (_kernel_bytes(leaf, quantized, sparse)
              if is_kernel(path, leaf) else leaf.nbytes)
  return total


def compress(variables: dict, quantize: str | None = None,
             prune_fraction: float = 0.0) -> Compressed:
  """Prunes, then quantises, the kernels of `variables['params']`."""
  check_options(quantize, prune_fraction)
  params = prune(variables['params'], prune_fraction)
  kernels = _kernels(params)
  weights = sum(k.size for k in kernels)
  zeroed = weights - sum(np.count_nonzero(k) for k in kernels)
  stored = params
  if quantize:
    quantized = jax.tree_util.tree_map_with_path(
        lambda path, leaf: quantize_int8(leaf) if is_kernel(path, leaf)
        else leaf, params)
    is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
    stored = jax.tree.map(lambda x: x[0] if is_pair(x) else x, quantized,
                          is_leaf=is_pair)
    params = jax.tree.map(lambda x: dequantize(*x) if is_pair(x) else x,
                          quantized, is_leaf=is_pair)
  size = size_bytes({**variables, 'params': stored}, quantized=bool(quantize),
                    sparse=prune_fraction > 0)
  return Compressed({**variables, 'params': params}, size, int(zeroed),
                    int(weights))
