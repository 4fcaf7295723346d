"""Name -> model constructor registry behind `jaxcnn.models.create`."""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models import lowering

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_TASKS: dict[str, str] = {}  # Name -> the task whose outputs it computes.


def register(name: str, factory: Callable[..., nn.Module],
             task: str = 'classification') -> None:
  """Registers `factory(num_classes=..., **overrides)` under `name`, a
  model of `task` (its outputs: logits for 'classification')."""
  if name in _FACTORIES:
    raise ValueError(f'Model {name!r} is registered twice.')
  _FACTORIES[name] = factory
  _TASKS[name] = task


def _fields(module: nn.Module) -> set[str]:
  return {f.name for f in dataclasses.fields(module)
          if f.init and f.name not in ('parent', 'name')}


def names(task: str | None = None) -> list[str]:
  """Sorted names of every registered model, or of `task`'s models."""
  return sorted(n for n in _FACTORIES if task in (None, _TASKS[n]))


def task_of(name: str) -> str:
  """The task whose outputs the registered model `name` computes."""
  return _TASKS[name]


def create(name: str, *, num_classes: int = 1000, **overrides: Any) -> nn.Module:
  """Builds the registered model `name` with `num_classes` outputs.

  `overrides` set any other field of the model's dataclass (e.g. `dtype`).
  """
  if name not in _FACTORIES:
    raise ValueError(
        f'Unknown model {name!r}. Known models: {", ".join(names())}.')
  factory = _FACTORIES[name]
  module = factory(num_classes=num_classes)
  fields = _fields(module)
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(
        f'Model {name!r} has no field(s) {unknown}. Its fields are: '
        f'{", ".join(sorted(fields))}.')
  return module.clone(**overrides) if overrides else module


def from_config(config: Any, num_classes: int,
                defaults: dict[str, Any] | None = None,
                platform: str | None = None) -> nn.Module:
  """The model a train config describes: `model`, `half_precision` (bf16
  compute, float32 parameters) and extra `model_kwargs`, which override the
  field `defaults` (e.g. what converted weights need), with the config's
  `lowering` for `platform` (default: JAX's; lowering.of_config)."""
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  fields, legacy = lowering.split_model_kwargs(
      {**(defaults or {}), **config.model_kwargs.to_dict()})
  module = create(config.model, num_classes=num_classes, dtype=dtype,
                  **fields)
  if 'lowering' not in _fields(module):  # A model whose layers have no choices.
    return module
  return module.clone(
      lowering=lowering.of_config(config, legacy, platform))
