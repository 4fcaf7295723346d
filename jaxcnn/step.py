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
# (batch, rng) -> the batch the model trains on (`Task.train_batch`).
BatchFn = Callable[[base.Batch, jax.Array], base.Batch]
# Folded into the step's key for `batch_fn`'s key; the microbatches' dropout
# keys fold in 0 ... grad_accum_steps - 1.
_BATCH_RNG_STREAM = 2**31 - 1


def l2_penalty(params: Any) -> jax.Array:
  """sum(w^2)/2 over decayed weights: torch's weight_decay, TF's l2_loss."""
  masked = jax.tree.leaves(jax.tree.map(
      lambda p, m: jnp.sum(jnp.square(p)) if m else 0.0, params,
      optim.decay_mask(params)))
  return 0.5 * sum(masked)


def _ema_update(ema: Any, new: Any, decay: jax.Array) -> Any:
  return jax.tree.map(lambda e, n: decay * e + (1.0 - decay) * n, ema, new)


def _all_finite(tree: Any) -> jax.Array:
  # One reduction over all leaves, not one per leaf: each is a kernel to
  # compile (a NASNet or EfficientNet step has hundreds of leaves).
  return jnp.all(jnp.isfinite(jnp.concatenate(
      [jnp.ravel(x) for x in jax.tree.leaves(tree)])))


def microbatches(batch: base.Batch, count: int) -> base.Batch:
  """Each leaf [n, ...] as [count, n / count, ...]: microbatch j holds
  examples j, j + count, j + 2 * count, ..., so that on a batch sharded
  over devices each microbatch stays spread over all of them."""
  return jax.tree.map(lambda x: jnp.swapaxes(
      x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1), batch)


def train_step(state: TrainState, batch: base.Batch, *, loss_fn: LossFn,
               rng: jax.Array, learning_rate_fn: optax.Schedule,
               l2_weight: float, ema_decay: float,
               skip_nonfinite: bool = False, freeze_pattern: str = '',
               progress_steps: int = 0, batch_fn: BatchFn | None = None,
               grad_accum_steps: int = 1) -> tuple[TrainState, Metrics]:
  """One optimizer update on a (globally sharded) batch.

  `batch_fn` (the task's `train_batch`, e.g. Mixup) first changes the batch,
  with a key of `rng` and the step alone, so a resumed run repeats it.
  `loss_fn` is the task's loss of the model's training outputs. BatchNorm
  layers whose statistics match the `freeze_pattern` regex normalise with
  them and keep them (`freeze.batch_norm`; the optimizer keeps the matching
  parameters fixed). With `progress_steps`, the model is told how far
  training is (`progress=step / progress_steps`, at most 1; NASNet ramps its
  drop path by it).

  `metrics['finite']` is 0 when the loss, the gradients or the updated
  weights are not finite; then `skip_nonfinite` keeps the old weights,
  BatchNorm statistics, optimizer state and EMA (the step count advances).

  `grad_accum_steps=k` runs the batch (after `batch_fn`) as k microbatches
  (`microbatches`) in sequence inside the step: one update with the mean of
  their gradients, and the mean of their losses and metrics, so the
  activations held at once are those of n / k examples. Without BatchNorm
  that is the update of the whole batch (to float rounding). With it, each
  microbatch is normalised by its own statistics (over n / k examples, on
  all devices together) and the running statistics take k momentum updates
  per step, one per microbatch in order: like k steps of n / k examples,
  not one of n. Each microbatch j has its own dropout key (the step's key
  folded with j).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  if batch_fn is not None:
    batch = batch_fn(batch, jax.random.fold_in(step_rng, _BATCH_RNG_STREAM))
  progress = ({'progress': jnp.minimum(1.0, state.step / progress_steps)}
              if progress_steps else {})

  def objective(params, batch_stats, batch, dropout_rng):
    with freeze.batch_norm(freeze_pattern):
      outputs, updates = state.apply_fn(
          {'params': params, 'batch_stats': batch_stats},
          batch['image'], train=True, mutable=['batch_stats', 'intermediates'],
          rngs={'dropout': dropout_rng}, **progress)
    loss, metrics = loss_fn(outputs, batch, updates.get('intermediates', {}))
    total = loss + l2_weight * l2_penalty(params) if l2_weight else loss
    return total, (loss, metrics, updates.get('batch_stats', {}))

  gradient = jax.grad(objective, has_aux=True)
  if grad_accum_steps == 1:
    grads, (loss, task_metrics, batch_stats) = gradient(
        state.params, state.batch_stats, batch, step_rng)
  else:
    def accumulate(carry, inputs):
      grad_sum, batch_stats = carry
      index, microbatch = inputs
      grads, (loss, metrics, batch_stats) = gradient(
          state.params, batch_stats, microbatch,
          jax.random.fold_in(step_rng, index))
      return (jax.tree.map(jnp.add, grad_sum, grads), batch_stats), (
          loss, metrics)

    (grad_sum, batch_stats), (losses, metrics) = jax.lax.scan(
        accumulate, (jax.tree.map(jnp.zeros_like, state.params),
                     state.batch_stats),
        (jnp.arange(grad_accum_steps), microbatches(batch, grad_accum_steps)))
    grads = jax.tree.map(lambda g: g / grad_accum_steps, grad_sum)
    loss = jnp.mean(losses)
    task_metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
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
      progress_steps=total_steps if _takes_progress(model) else 0,
      batch_fn=task.train_batch, grad_accum_steps=config.grad_accum_steps)
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
