"""Tasks the training loop runs, chosen by `--config.task`."""

from typing import Type

import ml_collections

from jaxcnn.tasks.base import Evaluator, InputPipeline, Task
from jaxcnn.tasks.classification import Classification
from jaxcnn.tasks.detection import Detection

_TASKS: dict[str, Type[Task]] = {'classification': Classification,
                                 'detection': Detection}


def register(name: str, task: Type[Task]) -> None:
  """Makes `--config.task=name` run `task`."""
  if name in _TASKS:
    raise ValueError(f'Task {name!r} is registered twice.')
  _TASKS[name] = task


def names() -> list[str]:
  return sorted(_TASKS)


def create(config: ml_collections.ConfigDict) -> Task:
  """The task of a run's config."""
  if config.task not in _TASKS:
    raise ValueError(f'--config.task={config.task!r} is not one of '
                     f'{", ".join(names())}.')
  return _TASKS[config.task](config)


__all__ = ['Evaluator', 'InputPipeline', 'Task', 'create', 'names',
           'register']
