"""The train and eval steps of every task, pure; `make_train_step` and
`make_eval_step` jit them over the device mesh for the trainer, the
benchmarks and any other caller."""

import functools
import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcnn import freeze
from jaxcnn import optim
from jaxcnn import sharding
from jaxcnn.state import TrainState
from jaxcnn.tasks import base

Metrics = dict[str, jax.Array]
# (training outputs, batch, sowed intermediates) -> (loss, metrics).
LossFn = Callable[[Any, base.Batch, dict], tuple[jax.Array, Metrics]]


def l2_penalty(params: Any) -> jax.Array:
  """sum(w^2)/2 over decayed weights: torch's weight_decay, TF's l2_loss."""
  masked = jax.tree.leaves(jax.tree.map(
      lambda p, m: jnp.sum(jnp.square(p)) if m else 0.0, params,
      optim.decay_mask(params)))
  return 0.5 * sum(masked)


def _ema_update(ema: Any, new: Any, decay: jax.Array) -> Any:
  return jax.tree.map(lambda e, n: decay * e + (1.0 - decay) * n, ema, new)


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x))
                            for x in jax.tree.leaves(tree)]))


def train_step(state: TrainState, batch: base.Batch, *, loss_fn: LossFn,
               rng: jax.Array, learning_rate_fn: optax.Schedule,
               l2_weight: float, ema_decay: float,
               skip_nonfinite: bool = False, freeze_pattern: str = '',
               progress_steps: int = 0) -> tuple[TrainState, Metrics]:
  """One optimizer update on a (globally sharded) batch.

  `loss_fn` is the task's loss of the model's training outputs. BatchNorm
  layers whose statistics match the `freeze_pattern` regex normalise with
  them and keep them (`freeze.batch_norm`; the optimizer keeps the matching
  parameters fixed). With `progress_steps`, the model is told how far
  training is (`progress=step / progress_steps`, at most 1; NASNet ramps its
  drop path by it).

  `metrics['finite']` is 0 when the loss, the gradients or the updated
  weights are not finite; then `skip_nonfinite` keeps the old weights,
  BatchNorm statistics, optimizer state and EMA (the step count advances).
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  progress = ({'progress': jnp.minimum(1.0, state.step / progress_steps)}
              if progress_steps else {})

  def objective(params):
    with freeze.batch_norm(freeze_pattern):
      outputs, updates = state.apply_fn(
          {'params': params, 'batch_stats': state.batch_stats},
          batch['image'], train=True, mutable=['batch_stats', 'intermediates'],
          rngs={'dropout': dropout_rng}, **progress)
    loss, metrics = loss_fn(outputs, batch, updates.get('intermediates', {}))
    total = loss + l2_weight * l2_penalty(params) if l2_weight else loss
    return total, (loss, metrics, updates.get('batch_stats', {}))

  grads, (loss, task_metrics, batch_stats) = jax.grad(
      objective, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if state.ema is not None:
    # TF's ExponentialMovingAverage(num_updates=step): a short initial memory.
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    new_state = new_state.replace(ema=_ema_update(
        state.ema, new_state.variables(), decay))
  grad_norm = optax.global_norm(grads)
  # A huge update can overflow the weights even from finite gradients.
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) &
            _all_finite(new_state.variables()))
  if skip_nonfinite:
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                             new_state, state.replace(step=new_state.step))
  metrics = {
      **task_metrics,
      'learning_rate': learning_rate_fn(state.step),
      'grad_norm': grad_norm,
      'finite': finite.astype(jnp.float32),
  }
  return new_state, metrics


def eval_step(variables: dict[str, Any], batch: base.Batch, *,
              apply_fn: Callable[..., Any],
              eval_outputs: Callable[[Any, base.Batch], Any]) -> Any:
  """The task's `eval_outputs` of the model on a padded eval batch.

  `variables` are a state's `variables()`, raw or EMA: one compiled step
  serves both.
  """
  return eval_outputs(apply_fn(variables, batch['image'], train=False), batch)


def _takes_progress(model: nn.Module) -> bool:
  return 'progress' in inspect.signature(type(model).__call__).parameters


def make_train_step(config: ml_collections.ConfigDict, task: base.Task,
                    model: nn.Module, learning_rate_fn: optax.Schedule,
                    mesh: jax.sharding.Mesh, state_sharding: Any,
                    total_steps: int) -> Callable[..., Any]:
  """The run's train step, jitted over `mesh` (the state donated)."""
  step = functools.partial(
      train_step, loss_fn=task.loss, rng=jax.random.PRNGKey(config.seed),
      learning_rate_fn=learning_rate_fn,
      l2_weight=(config.weight_decay if config.weight_decay_mode == 'l2'
                 else 0.0),
      ema_decay=config.ema_decay,
      skip_nonfinite=config.on_nonfinite == 'skip',
      freeze_pattern=config.freeze,
      progress_steps=total_steps if _takes_progress(model) else 0)
  return jax.jit(step,
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)),
                 donate_argnums=0)


def make_eval_step(task: base.Task, model: nn.Module, mesh: jax.sharding.Mesh,
                   variables_sharding: Any) -> Callable[..., Any]:
  """`eval_step` jitted over `mesh`, for raw and EMA variables alike."""
  step = functools.partial(eval_step, apply_fn=model.apply,
                           eval_outputs=task.eval_outputs)
  return jax.jit(step, in_shardings=(variables_sharding,
                                     sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))
