"""Image classification: softmax cross-entropy, top-1 / top-5 accuracy,
optional Mixup / CutMix of the training batches."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcnn import models
from jaxcnn.data import catalog
from jaxcnn.tasks import base
from jaxcnn.tasks import mixing

# The train batch's mixed target distributions [N, classes], with Mixup on.
SOFT_LABEL = 'soft_label'


def label_distribution(labels: jax.Array, num_classes: int,
                       label_smoothing: float = 0.0) -> jax.Array:
  """One-hot rows, smoothed: (1 - s) on the label plus s / num_classes on
  every class."""
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return targets


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in float32."""
  logits = logits.astype(jnp.float32)
  return optax.softmax_cross_entropy(
      logits, label_distribution(labels, logits.shape[-1], label_smoothing))


class _Sums(base.Evaluator):
  """Mask-weighted sums added on device; divided by the count at the end."""

  def __init__(self):
    self._totals = None

  def add(self, outputs: dict[str, jax.Array]) -> None:
    self._totals = outputs if self._totals is None else jax.tree.map(
        jnp.add, self._totals, outputs)

  def result(self) -> dict[str, float]:
    totals = jax.device_get(self._totals)
    count = totals.pop('count')
    return {k: float(v / count) for k, v in totals.items()}


class Classification(base.Task):
  """Labels in [0, num_classes); the model returns logits."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.num_classes = (
        catalog.get_spec(config.dataset, config.data_dir).num_classes
        if config.num_classes < 0 else config.num_classes)
    self.mixing = mixing.Mixing.from_config(config)

  def model(self, defaults: dict[str, Any]) -> nn.Module:
    return models.from_config(self.config, self.num_classes, defaults)

  def input_pipeline(self, model: nn.Module, process_index: int,
                     process_count: int) -> base.InputPipeline:
    from jaxcnn.data import classification  # tf.data: training only.
    return classification.create(self.config, model.in_channels,
                                 process_index=process_index,
                                 process_count=process_count)

  def train_batch(self, batch: base.Batch, rng: jax.Array) -> base.Batch:
    """With Mixup or CutMix on (`mixup_alpha`, `cutmix_alpha`), the mixed
    images and their `soft_label`s: the two labels' smoothed one-hot rows
    blended by the mixing weight."""
    if not self.mixing.enabled:
      return batch
    images, soft_labels = self.mixing(
        rng, batch['image'], label_distribution(
            batch['label'], self.num_classes, self.config.label_smoothing))
    return {**batch, 'image': images, SOFT_LABEL: soft_labels}

  def loss(self, outputs: jax.Array, batch: base.Batch,
           intermediates: dict[str, Any]) -> tuple[jax.Array, base.Metrics]:
    """Mean cross-entropy with the labels, or with the `soft_label`s of a
    mixed batch; `accuracy` counts a mixed example right when the model's
    top class is its dominant label (the one with the larger weight)."""
    if SOFT_LABEL in batch:
      targets = batch[SOFT_LABEL]
      labels = jnp.argmax(targets, -1)

      def per_example(logits):
        return optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                           targets)
    else:
      labels = batch['label']
      per_example = functools.partial(
          cross_entropy, labels=labels,
          label_smoothing=self.config.label_smoothing)
    loss = jnp.mean(per_example(outputs))
    metrics = {'loss': loss,
               'accuracy': jnp.mean(jnp.argmax(outputs, -1) == labels)}
    if 'aux_logits' in intermediates:
      metrics['aux_loss'] = jnp.mean(per_example(
          intermediates['aux_logits'][0]))
      loss = loss + self.config.aux_loss_weight * metrics['aux_loss']
    return loss, metrics

  def eval_outputs(self, outputs: jax.Array,
                   batch: base.Batch) -> dict[str, jax.Array]:
    logits = outputs.astype(jnp.float32)
    mask, labels = batch['mask'], batch['label']
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
        'loss': jnp.sum(cross_entropy(logits, labels) * mask),
        'accuracy': jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        'top5': jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        'count': jnp.sum(mask),
    }

  def evaluator(self) -> base.Evaluator:
    return _Sums()

  def metadata(self, model: nn.Module,
               data: base.InputPipeline) -> dict[str, Any]:
    config = self.config
    spec = catalog.get_spec(config.dataset, config.data_dir)
    label = data.builder.info.features['label']
    names = (list(label.names) if label.num_classes == self.num_classes
             else None)
    return {
        'dataset': config.dataset,
        'num_classes': self.num_classes,
        'class_names': names,
        'preprocessing': {
            'image_size': config.image_size,
            'crop_fraction': config.eval_crop_fraction,
            'interpolation': config.interpolation,
            'mean': list(spec.mean), 'std': list(spec.std)},
    }

  def dummy_batch(self, model: nn.Module, batch_size: int,
                  image_size: int) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    shape = (batch_size, image_size, image_size, model.in_channels)
    return {'image': rng.normal(size=shape).astype(np.float32),
            'label': rng.randint(0, self.num_classes,
                                 size=batch_size).astype(np.int32)}
