"""Mixup and CutMix of the classification task's training batches."""

import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import quickstart
from jaxcnn import state as state_lib
from jaxcnn import step as step_lib
from jaxcnn import tasks
from jaxcnn import workdir
from jaxcnn.tasks import classification
from jaxcnn.tasks import mixing

CLASSES = 10


def _one_hot(labels):
  return np.eye(CLASSES, dtype=np.float32)[labels]


def _images(n, size=16):
  return np.random.RandomState(0).normal(
      size=(n, size, size, 3)).astype(np.float32)


def _task(**fields):
  config = quickstart.get_config()
  config.update(fields)
  return tasks.create(config)


def test_mixup_blends_images_and_targets_by_one_lambda():
  images, labels = _images(6), np.arange(6)
  mixed, targets = mixing.Mixing(mixup_alpha=0.4)(
      jax.random.PRNGKey(3), images, _one_hot(labels))
  lam = float(targets[0, 0])  # The labels differ: each row holds lam.
  assert 0.0 < lam < 1.0
  np.testing.assert_allclose(targets[np.arange(6), labels], lam, rtol=1e-6)
  np.testing.assert_allclose(targets[np.arange(6), labels[::-1]], 1 - lam,
                             rtol=1e-6)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(
      mixed, lam * images + (1 - lam) * images[::-1], rtol=1e-5, atol=1e-6)


def test_cutmix_pastes_one_box_whose_area_is_the_corrected_lambda():
  # Example i is the constant i + 1: each pixel says where it came from.
  n, size = 5, 16
  images = np.broadcast_to(np.arange(1.0, n + 1, dtype=np.float32)[
      :, None, None, None], (n, size, size, 3)).copy()
  cutmix = mixing.Mixing(cutmix_alpha=1.0)
  lams = []
  for seed in range(12):
    mixed, targets = cutmix(jax.random.PRNGKey(seed), images,
                            _one_hot(np.arange(n)))
    mixed = np.asarray(mixed)
    pasted = mixed != images
    box = pasted[0, :, :, 0]
    # One axis-aligned box, the same in every channel and example; the
    # odd batch's middle example is pasted onto itself.
    np.testing.assert_array_equal(box, np.outer(box.any(1), box.any(0)))
    for i in range(n):
      np.testing.assert_array_equal(pasted[i], np.broadcast_to(
          box[:, :, None] & (i != 2), (size, size, 3)))
      np.testing.assert_array_equal(mixed[i][pasted[i]], n - i)
    lam = 1 - box.mean()
    np.testing.assert_allclose(targets[0, 0], lam, rtol=1e-6)
    np.testing.assert_allclose(targets[0, n - 1], 1 - lam, rtol=1e-6)
    lams.append(lam)
  assert len(set(lams)) > 6  # A new box for (almost) every key.


def test_cutmix_box_sides_follow_lambda_and_are_clipped_at_the_border():
  # lam 0.75: sides 16 * sqrt(0.25) = 8 around the centre, clipped.
  boxes = jax.vmap(lambda rng: mixing.cutmix_box(rng, 0.75, 16, 16))(
      jax.random.split(jax.random.PRNGKey(0), 200))
  top, bottom, left, right = map(np.asarray, boxes)
  heights, widths = bottom - top, right - left
  assert heights.max() == widths.max() == 8
  assert heights.min() == widths.min() == 4  # A centre on the top row.
  assert (top >= 0).all() and (bottom <= 16).all()
  np.testing.assert_array_equal(
      jax.vmap(mixing.box_area)(boxes), heights * widths)
  mask = mixing.box_mask(jax.tree.map(lambda b: b[0], boxes), 16, 16)
  assert float(mask.sum()) == heights[0] * widths[0]


def test_the_draws_follow_prob_switch_prob_and_the_beta_distribution():
  rngs = jax.random.split(jax.random.PRNGKey(0), 2000)
  draw = jax.vmap(mixing.Mixing(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.5,
                                switch_prob=0.25).sample)
  lam, use_cutmix = map(np.asarray, draw(rngs))
  mixed = lam < 1.0
  assert abs(mixed.mean() - 0.5) < 0.03
  assert abs(use_cutmix.mean() - 0.25) < 0.03
  # Beta(1, 1) is uniform on (0, 1).
  assert abs(lam[mixed].mean() - 0.5) < 0.03
  assert abs(np.mean(lam[mixed] < 0.25) - 0.25) < 0.03
  # Beta(0.1, 0.1) sits near 0 and 1.
  lam, _ = jax.vmap(mixing.Mixing(mixup_alpha=0.1).sample)(rngs)
  assert np.mean((lam < 0.05) | (lam > 0.95)) > 0.6


def test_prob_zero_and_alphas_zero_leave_the_batch_as_it_is():
  images, targets = _images(4), _one_hot(np.arange(4))
  mixed, same = mixing.Mixing(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)(
      jax.random.PRNGKey(0), images, targets)
  np.testing.assert_array_equal(mixed, images)
  np.testing.assert_array_equal(same, targets)
  batch = {'image': images, 'label': np.arange(4)}
  assert _task().train_batch(batch, jax.random.PRNGKey(0)) is batch


def test_the_task_mixes_smoothed_one_hot_labels():
  smoothing = 0.1
  task = _task(mixup_alpha=1.0, label_smoothing=smoothing)
  labels = np.array([3, 1, 4, 1, 5, 9, 2, 6], np.int32)
  mixed = task.train_batch({'image': _images(8), 'label': labels},
                           jax.random.PRNGKey(7))
  smooth = (1 - smoothing) * _one_hot(labels) + smoothing / CLASSES
  soft = np.asarray(mixed[classification.SOFT_LABEL])
  lam = (soft[0, 3] - smoothing / CLASSES) / (1 - smoothing)
  assert 0.0 < lam < 1.0
  np.testing.assert_allclose(soft, lam * smooth + (1 - lam) * smooth[::-1],
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(mixed['label'], labels)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_soft_label_loss_is_their_cross_entropy_accuracy_the_dominant_label():
  rng = np.random.RandomState(1)
  logits = rng.normal(size=(6, CLASSES)).astype(np.float32)
  aux = rng.normal(size=(6, CLASSES)).astype(np.float32)
  soft = rng.dirichlet(np.ones(CLASSES), size=6).astype(np.float32)
  soft[:3] = 0.7 * _one_hot(np.argmax(logits[:3], -1)) + 0.3 / CLASSES
  task = _task(mixup_alpha=1.0, aux_loss_weight=0.4)
  batch = {'label': np.zeros(6, np.int32), classification.SOFT_LABEL: soft}
  loss, metrics = task.loss(jnp.asarray(logits), batch,
                            {'aux_logits': (jnp.asarray(aux),)})
  expected = -np.mean(np.sum(soft * _log_softmax(logits), -1))
  expected_aux = -np.mean(np.sum(soft * _log_softmax(aux), -1))
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['aux_loss'], expected_aux, rtol=1e-5)
  np.testing.assert_allclose(loss, expected + 0.4 * expected_aux, rtol=1e-5)
  accuracy = np.mean(np.argmax(logits, -1) == np.argmax(soft, -1))
  assert accuracy >= 0.5  # The first three are right by construction.
  np.testing.assert_allclose(metrics['accuracy'], accuracy)


class _Linear(nn.Module):
  """Logits of the flattened image: a model that compiles in a moment."""
  in_channels: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(CLASSES)(x.reshape(x.shape[0], -1))


def test_the_mix_is_a_function_of_the_seed_and_the_step():
  task = _task(mixup_alpha=1.0, cutmix_alpha=1.0)

  def loss_fn(outputs, batch, intermediates):
    """The task's loss, its metrics also reporting the batch it trained on
    (its first image's sum and soft label)."""
    loss, metrics = task.loss(outputs, batch, intermediates)
    return loss, {**metrics, 'image_sum': jnp.sum(batch['image'][0]),
                  'soft_label': batch[classification.SOFT_LABEL][0]}

  @jax.jit
  def train_step(state, batch, rng):
    return step_lib.train_step(
        state, batch, loss_fn=loss_fn, rng=rng,
        learning_rate_fn=optax.constant_schedule(0.01), l2_weight=0.0,
        ema_decay=0.0, batch_fn=task.train_batch)

  model = _Linear()
  state = state_lib.create(model, optax.sgd(0.01), state_lib.initial_variables(
      model, jax.random.PRNGKey(0), (8, 8, 1)), False)
  batch = {'image': np.random.RandomState(0).normal(
      size=(8, 8, 8, 1)).astype(np.float32),
           'label': np.arange(8, dtype=np.int32)}

  def seen(seed, step):
    _, metrics = train_step(state.replace(step=jnp.int32(step)), batch,
                            jax.random.PRNGKey(seed))
    return float(metrics['image_sum']), tuple(np.asarray(
        metrics['soft_label']))

  first = seen(0, 5)
  assert first == seen(0, 5)
  assert first[0] != pytest.approx(float(batch['image'][0].sum()), abs=1e-3)
  assert first != seen(0, 6)
  assert first != seen(1, 5)


def test_runs_saved_before_mixing_and_accumulation_existed_resume(tmp_path):
  current = json.loads(quickstart.get_config().to_json_best_effort())
  added = ('mixup_alpha', 'cutmix_alpha', 'mixup_prob', 'mixup_switch_prob',
           'grad_accum_steps')
  workdir.write_config(str(tmp_path), {
      k: v for k, v in current.items() if k not in added})
  workdir.check_config(str(tmp_path), current)
  with pytest.raises(workdir.ConfigMismatchError,
                     match=r'mixup_alpha: 0\.0 -> 0\.2'):
    workdir.check_config(str(tmp_path), dict(current, mixup_alpha=0.2))
