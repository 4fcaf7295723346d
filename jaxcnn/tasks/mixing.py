"""Mixup and CutMix of a training batch, on device.

Mixup (Zhang et al. 2018) blends two images, `lam * a + (1 - lam) * b`;
CutMix (Yun et al. 2019) pastes a box of `b` into `a`. Either way the
targets are blended by the same `lam`, for CutMix the fraction of `a` that
is left after the box is clipped to the image. As in timm's default
('batch' mode), one `lam` and one box serve the whole batch and example `i`
is mixed with example `n - 1 - i` (the batch reversed; an odd batch's middle
example with itself): the stream already shuffles, so the pairs are random.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections


@dataclasses.dataclass(frozen=True)
class Mixing:
  """How a batch is mixed; off unless an alpha is positive.

  Each batch is mixed with probability `prob`; when both alphas are
  positive, it is CutMix with probability `switch_prob`, else Mixup. `lam`
  is drawn from Beta(alpha, alpha) of the chosen kind.
  """
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  prob: float = 1.0
  switch_prob: float = 0.5

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'Mixing':
    return cls(mixup_alpha=config.mixup_alpha,
               cutmix_alpha=config.cutmix_alpha, prob=config.mixup_prob,
               switch_prob=config.mixup_switch_prob)

  @property
  def enabled(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0

  def sample(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(lam, use_cutmix) for one batch; lam is 1 when it is not mixed."""
    choose_rng, beta_rng, apply_rng = jax.random.split(rng, 3)
    if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
      use_cutmix = jax.random.uniform(choose_rng) < self.switch_prob
    else:
      use_cutmix = jnp.asarray(self.cutmix_alpha > 0)
    alpha = jnp.where(use_cutmix, self.cutmix_alpha, self.mixup_alpha)
    lam = jax.random.beta(beta_rng, alpha, alpha)
    lam = jnp.where(jax.random.uniform(apply_rng) < self.prob, lam, 1.0)
    return lam, use_cutmix

  def __call__(self, rng: jax.Array, images: jax.Array,
               targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mixed NHWC `images` and per-example target distributions [N, K]."""
    sample_rng, box_rng = jax.random.split(rng)
    lam, use_cutmix = self.sample(sample_rng)
    height, width = images.shape[1:3]
    box = cutmix_box(box_rng, lam, height, width)
    # The weight of the example's own pixel: lam everywhere (Mixup), or 0 in
    # the box and 1 elsewhere (CutMix, exact: 1 * a + 0 * b is a).
    weights = jnp.where(use_cutmix, 1.0 - box_mask(box, height, width), lam)
    lam = jnp.where(use_cutmix, 1.0 - box_area(box) / (height * width), lam)
    weights = weights[None, :, :, None].astype(images.dtype)
    mixed = weights * images + (1 - weights) * images[::-1]
    targets = lam * targets + (1.0 - lam) * targets[::-1]
    return mixed, targets


Box = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def cutmix_box(rng: jax.Array, lam: jax.Array, height: int, width: int) -> Box:
  """(top, bottom, left, right), bottom and right exclusive: sides
  floor(side * sqrt(1 - lam)) around a uniformly drawn centre, clipped to
  the image (so its area can be less than 1 - lam)."""
  y_rng, x_rng = jax.random.split(rng)
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  cy = jax.random.randint(y_rng, (), 0, height)
  cx = jax.random.randint(x_rng, (), 0, width)
  return (jnp.clip(cy - cut_h // 2, 0, height),
          jnp.clip(cy + (cut_h + 1) // 2, 0, height),
          jnp.clip(cx - cut_w // 2, 0, width),
          jnp.clip(cx + (cut_w + 1) // 2, 0, width))


def box_mask(box: Box, height: int, width: int) -> jax.Array:
  """[height, width]: 1.0 inside `box`, 0.0 outside."""
  top, bottom, left, right = box
  rows = jnp.arange(height)
  cols = jnp.arange(width)
  inside = (((rows >= top) & (rows < bottom))[:, None] &
            ((cols >= left) & (cols < right))[None, :])
  return inside.astype(jnp.float32)


def box_area(box: Box) -> jax.Array:
  top, bottom, left, right = box
  return ((bottom - top) * (right - left)).astype(jnp.float32)
