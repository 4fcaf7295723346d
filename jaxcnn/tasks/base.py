"""The task seam: what a task supplies to the one training loop.

The loop (`trainer`) owns everything a run needs whatever it learns: the
seeded, resumable stream, the jitted step over the mesh, EMA, non-finite
halt/skip, checkpoints with checksums, preemption, multi-process runs and
metrics. A task says what is particular to one kind of problem: its model,
its examples, its loss, its evaluation and what its checkpoints record.
"""

import abc
from typing import Any, Protocol

import flax.linen as nn
import jax
import ml_collections
import numpy as np

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class InputPipeline(Protocol):
  """The data of one run (`jaxcnn.data.stream.Stream`)."""
  steps_per_epoch: int

  def train_batches(self, start_step: int = 0) -> Any: ...

  def eval_batches(self) -> Any: ...


class Evaluator(abc.ABC):
  """One evaluation pass: `add` each padded batch's `Task.eval_outputs`
  (device arrays, summed on device or fetched to the host, as the metric
  needs), then `result()`."""

  @abc.abstractmethod
  def add(self, outputs: Any) -> None:
    ...

  @abc.abstractmethod
  def result(self) -> dict[str, float]:
    """Named floats, logged as `eval/<name>`."""


class Task(abc.ABC):
  """A kind of problem the loop trains; built from the run's config."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def model(self, defaults: dict[str, Any]) -> nn.Module:
    """The network: a module with `in_channels` and `dtype` fields, called
    as `(images, train=...)`. `defaults` are model fields that the weights
    it starts from need (e.g. converted weights' padding), which the
    config's `model_kwargs` override."""

  @abc.abstractmethod
  def input_pipeline(self, model: nn.Module, process_index: int,
                     process_count: int) -> InputPipeline:
    """This process's train and eval batches (dicts with an `image` and the
    task's targets; eval batches also have a `mask`)."""

  def train_batch(self, batch: Batch, rng: jax.Array) -> Batch:
    """The training batch the model sees, changed on device inside the
    jitted step before the forward pass (e.g. Mixup); `rng` is the step's
    own, so a resumed run changes each batch as before. The batch itself by
    default."""
    del rng
    return batch

  @abc.abstractmethod
  def loss(self, outputs: Any, batch: Batch,
           intermediates: dict[str, Any]) -> tuple[jax.Array, Metrics]:
    """The scalar loss to minimise and per-step metrics (first `loss`) of
    the model's training outputs on a `train_batch`; `intermediates` holds
    what the model sowed (e.g. auxiliary logits)."""

  @abc.abstractmethod
  def eval_outputs(self, outputs: Any, batch: Batch) -> Any:
    """What the evaluator needs of one padded eval batch (jitted: padding
    rows have `batch['mask'] == 0`)."""

  @abc.abstractmethod
  def evaluator(self) -> Evaluator:
    """A fresh evaluation pass."""

  @abc.abstractmethod
  def metadata(self, model: nn.Module,
               data: InputPipeline) -> dict[str, Any]:
    """What checkpoints record so that predict, evaluation and fine-tuning
    need nothing else (class count and names, preprocessing, ...)."""

  @abc.abstractmethod
  def dummy_batch(self, model: nn.Module, batch_size: int,
                  image_size: int) -> dict[str, np.ndarray]:
    """A synthetic train batch (benchmarks)."""
