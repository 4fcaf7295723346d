"""Learning-rate schedules and optimizers built from the config."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcnn import freeze

SCHEDULES = ('cosine', 'exponential', 'multistep', 'constant')
OPTIMIZERS = ('sgd', 'rmsprop', 'adamw')
WEIGHT_DECAY_MODES = ('l2', 'decoupled')


def to_steps(config: ml_collections.ConfigDict, name: str,
             steps_per_epoch: int) -> int:
  """`config.{name}_steps` if non-negative, else `{name}_epochs` in steps."""
  steps = config[f'{name}_steps']
  if steps >= 0:
    return int(steps)
  return int(round(config[f'{name}_epochs'] * steps_per_epoch))


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  if config.lr_batch_size:
    return config.learning_rate * config.batch_size / config.lr_batch_size
  return config.learning_rate


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then the configured decay."""
  if config.schedule not in SCHEDULES:
    raise ValueError(f'--config.schedule={config.schedule!r} is not one of '
                     f'{", ".join(SCHEDULES)}.')
  peak = peak_learning_rate(config)
  total = to_steps(config, 'num', steps_per_epoch)
  warmup = min(to_steps(config, 'warmup', steps_per_epoch), total)
  if config.schedule == 'cosine':
    cosine = optax.cosine_decay_schedule(peak, max(1, total - warmup))
    decay = lambda step: cosine(step - warmup)
  elif config.schedule == 'exponential':
    # Counted from step 0, as the TF references do; warmup overrides it.
    decay = optax.exponential_decay(
        peak, transition_steps=max(1, round(config.lr_decay_epochs *
                                            steps_per_epoch)),
        decay_rate=config.lr_decay_rate, staircase=True)
  elif config.schedule == 'multistep':
    decay = optax.piecewise_constant_schedule(
        peak, {round(e * steps_per_epoch): config.lr_decay_rate
               for e in config.lr_boundaries_epochs})
  else:
    decay = optax.constant_schedule(peak)

  def schedule(step):
    if not warmup:
      return decay(step)
    return jnp.where(step < warmup, peak * step / warmup, decay(step))
  return schedule


def decay_mask(params: Any) -> Any:
  """True for weights that get weight decay: kernels, not BN scales/biases."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def tf_rmsprop(learning_rate: optax.ScalarOrSchedule, decay: float,
               epsilon: float, momentum: float) -> optax.GradientTransformation:
  """TensorFlow's RMSProp: square average starts at 1, eps inside the sqrt,
  and the learning rate is applied before the momentum accumulation."""
  return optax.chain(
      optax.scale_by_rms(decay=decay, eps=epsilon, initial_scale=1.0,
                         eps_in_sqrt=True),
      optax.scale_by_learning_rate(learning_rate),
      optax.trace(decay=momentum) if momentum else optax.identity(),
  )


def create_optimizer(config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  """The configured optimizer; L2 weight decay lives in the loss instead."""
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f'--config.optimizer={config.optimizer!r} is not one of '
                     f'{", ".join(OPTIMIZERS)}.')
  if config.weight_decay_mode not in WEIGHT_DECAY_MODES:
    raise ValueError(f'--config.weight_decay_mode={config.weight_decay_mode!r}'
                     f' is not one of {", ".join(WEIGHT_DECAY_MODES)}.')
  decoupled = config.weight_decay_mode == 'decoupled' and config.weight_decay
  parts = []
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.optimizer == 'adamw':
    parts.append(optax.adamw(
        schedule, b1=config.adam_b1, b2=config.adam_b2,
        weight_decay=config.weight_decay if decoupled else 0.0,
        mask=decay_mask))
    return freeze.optimizer(optax.chain(*parts), config.freeze)
  if decoupled:
    # Decay is scaled by the learning rate, like torch's SGD weight_decay.
    parts.append(optax.add_decayed_weights(config.weight_decay, decay_mask))
  if config.optimizer == 'sgd':
    parts.append(optax.sgd(schedule, momentum=config.momentum or None,
                           nesterov=config.nesterov))
  else:
    parts.append(tf_rmsprop(schedule, config.rmsprop_decay,
                            config.rmsprop_epsilon, config.momentum))
  return freeze.optimizer(optax.chain(*parts), config.freeze)

