"""Pure train and eval steps; `trainer` jits them over the device mesh."""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxcnn import freeze
from jaxcnn import optim
from jaxcnn.state import TrainState

Metrics = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in float32."""
  logits = logits.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


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


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               rng: jax.Array, learning_rate_fn: optax.Schedule,
               label_smoothing: float, l2_weight: float,
               ema_decay: float, skip_nonfinite: bool = False,
               freeze_pattern: str = '') -> tuple[TrainState, Metrics]:
  """One optimizer update on a (globally sharded) batch.

  BatchNorm layers whose statistics match the `freeze_pattern` regex
  normalise with them and keep them (`freeze.batch_norm`; the optimizer keeps
  the matching parameters fixed).

  `metrics['finite']` is 0 when the loss, the gradients or the updated
  weights are not finite; then `skip_nonfinite` keeps the old weights,
  BatchNorm statistics, optimizer state and EMA (the step count advances).
  """
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    with freeze.batch_norm(freeze_pattern):
      logits, updates = state.apply_fn(
          {'params': params, 'batch_stats': state.batch_stats},
          batch['image'], train=True, mutable=['batch_stats'],
          rngs={'dropout': dropout_rng})
    loss = jnp.mean(cross_entropy(logits, batch['label'], label_smoothing))
    total = loss + l2_weight * l2_penalty(params) if l2_weight else loss
    return total, (loss, logits, updates.get('batch_stats', {}))

  grads, (loss, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      state.params)
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
      'loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'learning_rate': learning_rate_fn(state.step),
      'grad_norm': grad_norm,
      'finite': finite.astype(jnp.float32),
  }
  return new_state, metrics


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], *,
              apply_fn: Callable[..., jax.Array]) -> Metrics:
  """Mask-weighted sums over a padded eval batch (divide by `count`).

  `variables` are a state's `variables()`, raw or EMA: one compiled step
  serves both.
  """
  logits = apply_fn(variables, batch['image'], train=False).astype(
      jnp.float32)
  mask = batch['mask']
  labels = batch['label']
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  return {
      'loss': jnp.sum(cross_entropy(logits, labels) * mask),
      'accuracy': jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
      'top5': jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
      'count': jnp.sum(mask),
  }
