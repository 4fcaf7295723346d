"""Freezing part of a network for fine-tuning (`--config.freeze=REGEX`).

The regex is matched against variable paths ('layer1_0/bn1/scale'). A frozen
parameter is never updated. A BatchNorm layer whose statistics match
('layer1_0/bn1/mean') is frozen whole: in training too it normalises with its
stored statistics and never updates them, so training and evaluation see the
same network (what timm's FrozenBatchNorm2d and Keras' `trainable=False` do).
Normalising with batch statistics while the stored ones stay fixed would
train the layers above on activations that evaluation never produces.
"""

import contextlib
import re
from typing import Any, Iterator

import flax.linen as nn
import jax
import optax

from jaxcnn import sharding


def mask(tree: Any, pattern: str) -> Any:
  """True for leaves whose path ('layer1_0/bn1/scale') matches `pattern`."""
  if not pattern:
    return jax.tree.map(lambda _: False, tree)
  regex = re.compile(pattern)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: bool(regex.search(sharding.path_name(path))), tree)


def optimizer(tx: optax.GradientTransformation,
              pattern: str) -> optax.GradientTransformation:
  """`tx` for the parameters not matching `pattern`; the others never move."""
  if not pattern:
    return tx

  def labels(params):
    return jax.tree.map(lambda frozen: 'frozen' if frozen else 'trained',
                        mask(params, pattern))
  return optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()},
                               labels)


def _is_frozen_batch_norm(module: nn.Module, regex: re.Pattern) -> bool:
  if not isinstance(module, nn.BatchNorm) or module.use_running_average:
    return False
  path = '/'.join(module.scope.path)
  return any(regex.search(f'{path}/{stat}') for stat in ('mean', 'var'))


@contextlib.contextmanager
def batch_norm(pattern: str) -> Iterator[None]:
  """Within it, frozen BatchNorm layers use their stored statistics even when
  the model is applied with `train=True` (and so leave them unchanged)."""
  if not pattern:
    yield
    return
  regex = re.compile(pattern)

  def use_stored_statistics(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name == '__call__' and
        _is_frozen_batch_norm(module, regex)):
      # The same layer, bound to the same variables, in inference mode.
      frozen = module.clone(parent=module.scope, use_running_average=True)
      kwargs = {k: v for k, v in kwargs.items() if k != 'use_running_average'}
      return frozen(*args[:1], **kwargs)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(use_stored_statistics):
    yield
