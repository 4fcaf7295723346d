"""Name -> model constructor registry behind `jaxcnn.models.create`."""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
  """Registers `factory(num_classes=..., **overrides)` under `name`."""
  if name in _FACTORIES:
    raise ValueError(f'Model {name!r} is registered twice.')
  _FACTORIES[name] = factory


def names() -> list[str]:
  """Sorted names of every registered model."""
  return sorted(_FACTORIES)


def create(name: str, *, num_classes: int = 1000, **overrides: Any) -> nn.Module:
  """Builds the registered model `name` with `num_classes` outputs.

  `overrides` set any other field of the model's dataclass (e.g. `dtype`).
  """
  if name not in _FACTORIES:
    raise ValueError(
        f'Unknown model {name!r}. Known models: {", ".join(names())}.')
  factory = _FACTORIES[name]
  module = factory(num_classes=num_classes)
  fields = {f.name for f in dataclasses.fields(module)
            if f.init and f.name not in ('parent', 'name')}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(
        f'Model {name!r} has no field(s) {unknown}. Its fields are: '
        f'{", ".join(sorted(fields))}.')
  return module.clone(**overrides) if overrides else module


def from_config(config: Any, num_classes: int,
                defaults: dict[str, Any] | None = None) -> nn.Module:
  """The model a train config describes: `model`, `half_precision` (bf16
  compute, float32 parameters) and extra `model_kwargs`, which override the
  field `defaults` (e.g. what converted weights need)."""
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  return create(config.model, num_classes=num_classes, dtype=dtype,
                **{**(defaults or {}), **config.model_kwargs.to_dict()})
