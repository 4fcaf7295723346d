"""RandAugment and AutoAugment as pure, stateless TensorFlow ops.

Semantics follow the EfficientNet TPU reference
(tensorflow/tpu, models/official/efficientnet/autoaugment.py): the same
op set, the same magnitude -> argument mapping (``_MAX_LEVEL`` = 10, scaled
linearly, also past 10), nearest-neighbour geometric transforms with grey
(128) fill, random sign flips for rotate/shear/translate, and the ImageNet
AutoAugment policy ``'v0'``.

Everything here is built from TensorFlow ops only, so it can run inside a
``tf.data.Dataset.map`` (graph mode). Every random decision is made with
stateless random ops driven by an explicit ``seed`` (an int32/int64 tensor of
shape ``[2]``), which is split with ``tf.random.experimental.stateless_split``
for sub-decisions. Equal seeds give equal outputs, eagerly or in a graph, and
per-example seeds (e.g. from ``tf.data.Dataset.random`` or
``stateless_split``) work naturally. Op and sub-policy selection uses
``tf.switch_case``, so a whole policy traces into a single graph.

Deliberate deviations from the reference (see ``apply_op`` for details):

* ``contrast`` blends towards the mean grey level of the image (as PIL does);
  the reference blends towards ``num_pixels / 256`` because it sums the
  histogram counts instead of the pixel values.
* Grey levels (``color``/``contrast``) use PIL's exact integer luma
  ``(19595 R + 38470 G + 7471 B + 2**15) >> 16`` instead of
  ``tf.image.rgb_to_grayscale``'s float weights (differs by at most 1 level).
* ``posterize`` clamps the number of kept bits to ``[1, 8]``. This is what the
  reference actually computes on CPU (TF clamps shift amounts to ``[0, 7]``
  for uint8), written out explicitly instead of relying on
  implementation-defined shifts.
* ``autocontrast`` and the ``sharpness`` smoothing filter are computed in
  exact integer arithmetic (same truncating semantics as the reference, but
  without float32 round-off).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Sequence, Union

import numpy as np

from jaxcnn.imports import tensorflow as tf

__all__ = [
    'OP_NAMES',
    'RANDAUGMENT_OPS',
    'POLICIES',
    'apply_op',
    'randaugment',
    'autoaugment',
]

SeedLike = Union[tf.Tensor, np.ndarray, Sequence[int]]

# Magnitude that maps to the "full" argument range; larger magnitudes simply
# extrapolate linearly (RandAugment uses up to M=28 for EfficientNet-B7).
MAX_LEVEL = 10.0
# Value written into pixels uncovered by geometric transforms and by cutout.
FILL_VALUE = 128

# Per-recipe constants of the reference (pixels at magnitude MAX_LEVEL).
RANDAUGMENT_TRANSLATE_CONST = 100.0
RANDAUGMENT_CUTOUT_CONST = 40.0
AUTOAUGMENT_TRANSLATE_CONST = 250.0
AUTOAUGMENT_CUTOUT_CONST = 100.0

#: All single-image ops understood by `apply_op`, in the order RandAugment
#: draws from (the order of the reference's RandAugment op list).
OP_NAMES: tuple[str, ...] = (
    'autocontrast',
    'equalize',
    'invert',
    'rotate',
    'posterize',
    'solarize',
    'color',
    'contrast',
    'brightness',
    'sharpness',
    'shear_x',
    'shear_y',
    'translate_x',
    'translate_y',
    'cutout',
    'solarize_add',
)

#: Ops RandAugment chooses from (uniformly).
RANDAUGMENT_OPS: tuple[str, ...] = OP_NAMES

#: Ops whose argument gets a random sign (+/- with probability 1/2 each).
RANDOM_SIGN_OPS: frozenset[str] = frozenset(
    {'rotate', 'shear_x', 'shear_y', 'translate_x', 'translate_y'})

#: Ops that consume the `seed` argument of `apply_op`.
SEEDED_OPS: frozenset[str] = RANDOM_SIGN_OPS | {'cutout'}

# A sub-policy is a sequence of (op name, probability, magnitude).
SubPolicy = tuple[tuple[str, float, float], ...]

#: AutoAugment policies. 'v0' is the ImageNet policy of the AutoAugment paper
#: as used by the EfficientNet reference (25 sub-policies of 2 ops each).
POLICIES: Mapping[str, tuple[SubPolicy, ...]] = {
    'v0': (
        (('equalize', 0.8, 1), ('shear_y', 0.8, 4)),
        (('color', 0.4, 9), ('equalize', 0.6, 3)),
        (('color', 0.4, 1), ('rotate', 0.6, 8)),
        (('solarize', 0.8, 3), ('equalize', 0.4, 7)),
        (('solarize', 0.4, 2), ('solarize', 0.6, 2)),
        (('color', 0.2, 0), ('equalize', 0.8, 8)),
        (('equalize', 0.4, 8), ('solarize_add', 0.8, 3)),
        (('shear_x', 0.2, 9), ('rotate', 0.6, 8)),
        (('color', 0.6, 1), ('equalize', 1.0, 2)),
        (('invert', 0.4, 9), ('rotate', 0.6, 0)),
        (('equalize', 1.0, 9), ('shear_y', 0.6, 3)),
        (('color', 0.4, 7), ('equalize', 0.6, 0)),
        (('posterize', 0.4, 6), ('autocontrast', 0.4, 7)),
        (('solarize', 0.6, 8), ('color', 0.6, 9)),
        (('solarize', 0.2, 4), ('rotate', 0.8, 9)),
        (('rotate', 1.0, 7), ('translate_y', 0.8, 9)),
        (('shear_x', 0.0, 0), ('solarize', 0.8, 4)),
        (('shear_y', 0.8, 0), ('color', 0.6, 4)),
        (('color', 1.0, 0), ('rotate', 0.6, 2)),
        (('equalize', 0.8, 4), ('equalize', 0.0, 8)),
        (('equalize', 1.0, 4), ('autocontrast', 0.6, 2)),
        (('shear_y', 0.4, 7), ('solarize_add', 0.6, 7)),
        (('posterize', 0.8, 2), ('solarize', 0.6, 10)),
        (('solarize', 0.6, 8), ('equalize', 0.6, 1)),
        (('color', 0.8, 6), ('rotate', 0.4, 5)),
    ),
}


# ---------------------------------------------------------------------------
# Input validation.


def _as_image(image) -> tf.Tensor:
  image = tf.convert_to_tensor(image)
  if image.dtype != tf.uint8:
    raise TypeError(f'Expected a uint8 image, got dtype {image.dtype.name}.')
  if image.shape.rank is not None and (
      image.shape.rank != 3 or image.shape[-1] not in (None, 3)):
    raise ValueError(
        f'Expected an image of shape [H, W, 3], got {image.shape}.')
  return image


def _as_seed(seed: SeedLike) -> tf.Tensor:
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64):
    raise TypeError(f'seed must be int32 or int64, got {seed.dtype.name}.')
  if not seed.shape.is_compatible_with([2]):
    raise ValueError(f'seed must have shape [2], got {seed.shape}.')
  return seed


def _as_magnitude(magnitude: float) -> float:
  magnitude = float(magnitude)
  if not math.isfinite(magnitude) or magnitude < 0:
    raise ValueError(f'magnitude must be finite and >= 0, got {magnitude}.')
  return magnitude


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


# ---------------------------------------------------------------------------
# Pixel ops. All take/return uint8 [H, W, 3]; arguments are already mapped
# from magnitudes.


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: float) -> tf.Tensor:
  """`degenerate + factor * (image - degenerate)`, clipped to [0, 255].

  factor 0 gives `degenerate`, 1 gives `image`; factor > 1 extrapolates.
  Truncates towards zero like the reference.
  """
  if factor == 1.0:
    return image
  base = tf.cast(degenerate, tf.float32)
  out = base + factor * (tf.cast(image, tf.float32) - base)
  return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)


def _luma(image: tf.Tensor) -> tf.Tensor:
  """PIL's 'L' conversion (ITU-R 601-2), exact in integers; int32 [H, W]."""
  rgb = tf.cast(image, tf.int32)
  weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471
  return tf.bitwise.right_shift(weighted + (1 << 15), 16)


def _invert(image: tf.Tensor) -> tf.Tensor:
  return 255 - image


def _posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the `bits` most significant bits of every channel value."""
  mask = (0xFF << (8 - bits)) & 0xFF
  return tf.bitwise.bitwise_and(image, tf.constant(mask, tf.uint8))


def _solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
  """Inverts all values >= threshold (threshold may exceed 255)."""
  keep = tf.cast(image, tf.int32) < threshold
  return tf.where(keep, image, 255 - image)


def _solarize_add(image: tf.Tensor, addition: int,
                  threshold: int = 128) -> tf.Tensor:
  """Adds `addition` (clipped to [0, 255]) to all values < threshold."""
  added = tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255)
  return tf.where(image < threshold, tf.cast(added, tf.uint8), image)


def _color(image: tf.Tensor, factor: float) -> tf.Tensor:
  """PIL ImageEnhance.Color: blend with the grey-scale version."""
  grey = tf.cast(_luma(image), tf.uint8)
  return _blend(tf.stack([grey, grey, grey], axis=-1), image, factor)


def _contrast(image: tf.Tensor, factor: float) -> tf.Tensor:
  """PIL ImageEnhance.Contrast: blend with the mean grey level."""
  mean = tf.reduce_mean(tf.cast(_luma(image), tf.float32))
  mean = tf.cast(tf.floor(mean + 0.5), tf.uint8)
  return _blend(tf.fill(tf.shape(image), mean), image, factor)


def _brightness(image: tf.Tensor, factor: float) -> tf.Tensor:
  """PIL ImageEnhance.Brightness: blend with black."""
  return _blend(tf.zeros_like(image), image, factor)


def _sharpness(image: tf.Tensor, factor: float) -> tf.Tensor:
  """PIL ImageEnhance.Sharpness: blend with a smoothed image.

  The smoothing kernel is [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on the
  interior (truncated to an integer); the one-pixel border keeps the original
  values.
  """
  if factor == 1.0:
    return image
  x = tf.cast(image, tf.int32)
  h, w = tf.shape(x)[0], tf.shape(x)[1]
  total = 4 * x[1:-1, 1:-1]  # Centre weight 5 = 4 + the centre term below.
  for dy in range(3):
    for dx in range(3):
      total += x[dy:h - 2 + dy, dx:w - 2 + dx]
  smooth = tf.pad(total // 13, [[1, 1], [1, 1], [0, 0]])
  rows = tf.range(h)
  cols = tf.range(w)
  interior = ((rows > 0) & (rows < h - 1))[:, None, None] & (
      (cols > 0) & (cols < w - 1))[None, :, None]
  degenerate = tf.cast(tf.where(interior, smooth, x), tf.uint8)
  return _blend(degenerate, image, factor)


def _equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL ImageOps.equalize, per channel."""
  shape = tf.shape(image)
  flat = tf.reshape(tf.cast(image, tf.int32), [-1, 3])
  num_pixels = tf.shape(flat)[0]
  # One joint bincount for the three channels: key = 256 * channel + value.
  keys = flat + tf.constant([0, 256, 512], tf.int32)
  hist = tf.reshape(
      tf.math.bincount(tf.reshape(keys, [-1]), minlength=768, maxlength=768,
                       dtype=tf.int32), [3, 256])
  # Count of the largest value present in each channel.
  last = tf.gather(hist, tf.reduce_max(flat, axis=0), batch_dims=1)
  step = (num_pixels - last) // 255  # [3]
  safe_step = tf.maximum(step, 1)
  lut = (tf.cumsum(hist, axis=1) + (safe_step // 2)[:, None]) // safe_step[:,
                                                                           None]
  # lut[v] is computed from the counts of values strictly below v.
  lut = tf.concat([tf.zeros([3, 1], tf.int32), lut[:, :-1]], axis=1)
  lut = tf.clip_by_value(lut, 0, 255)
  mapped = tf.gather(tf.reshape(lut, [-1]), keys)
  out = tf.where(step[None, :] > 0, mapped, flat)
  return tf.reshape(tf.cast(out, tf.uint8), shape)


def _autocontrast(image: tf.Tensor) -> tf.Tensor:
  """PIL ImageOps.autocontrast (no cutoff), per channel.

  Maps each channel's [min, max] linearly onto [0, 255] (truncating);
  constant channels are left unchanged.
  """
  x = tf.cast(image, tf.int32)
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  span = hi - lo
  scaled = (x - lo) * 255 // tf.maximum(span, 1)
  return tf.cast(tf.where(span > 0, scaled, x), tf.uint8)


def _cutout(image: tf.Tensor, pad_size: int, seed: tf.Tensor) -> tf.Tensor:
  """Fills a (2 pad_size)^2 square (clipped to the image) with FILL_VALUE.

  The square is centred at a uniformly random pixel.
  """
  if pad_size <= 0:
    return image
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  seed_y, seed_x = _split(seed, 2)
  cy = tf.random.stateless_uniform([], seed_y, minval=0, maxval=h,
                                   dtype=tf.int32)
  cx = tf.random.stateless_uniform([], seed_x, minval=0, maxval=w,
                                   dtype=tf.int32)
  rows = tf.range(h)
  cols = tf.range(w)
  in_rows = (rows >= cy - pad_size) & (rows < cy + pad_size)
  in_cols = (cols >= cx - pad_size) & (cols < cx + pad_size)
  mask = in_rows[:, None, None] & in_cols[None, :, None]
  return tf.where(mask, tf.constant(FILL_VALUE, tf.uint8), image)


# ---------------------------------------------------------------------------
# Geometric ops.


def _transform(image: tf.Tensor, coefficients: Sequence) -> tf.Tensor:
  """Applies a projective transform, nearest neighbour, FILL_VALUE outside.

  `coefficients` = [a0, a1, a2, b0, b1, b2, c0, c1] maps an output pixel
  (x, y) to the input location ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k)
  with k = c0 x + c1 y + 1.
  """
  coefficients = tf.stack(
      [tf.convert_to_tensor(c, tf.float32) for c in coefficients])
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None],
      transforms=coefficients[None],
      output_shape=tf.shape(image)[:2],
      fill_value=tf.constant(FILL_VALUE, tf.float32),
      interpolation='NEAREST',
      fill_mode='CONSTANT')[0]
  out.set_shape(image.shape)
  return out


def _rotate(image: tf.Tensor, degrees) -> tf.Tensor:
  """Rotates about the image centre by `degrees` (counter-clockwise)."""
  theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(theta), tf.sin(theta)
  shape = tf.cast(tf.shape(image), tf.float32)
  cy, cx = (shape[0] - 1.0) / 2.0, (shape[1] - 1.0) / 2.0
  return _transform(image, [
      cos, -sin, cx - cos * cx + sin * cy,
      sin, cos, cy - sin * cx - cos * cy,
      0.0, 0.0,
  ])


def _shear_x(image: tf.Tensor, level) -> tf.Tensor:
  """Output (x, y) samples input (x + level * y, y)."""
  return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def _shear_y(image: tf.Tensor, level) -> tf.Tensor:
  """Output (x, y) samples input (x, y + level * x)."""
  return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def _translate_x(image: tf.Tensor, pixels) -> tf.Tensor:
  """Moves the content `pixels` to the right."""
  return _transform(image, [1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def _translate_y(image: tf.Tensor, pixels) -> tf.Tensor:
  """Moves the content `pixels` down."""
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0])


# ---------------------------------------------------------------------------
# Magnitude -> argument mapping (reference: level_to_arg).


def _random_sign(value: float, seed: tf.Tensor) -> tf.Tensor:
  """`value` or `-value`, each with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  value = tf.constant(value, tf.float32)
  return tf.where(flip, -value, value)


def _enhance_factor(level: float) -> float:
  return level * 1.8 + 0.1


def _posterize_bits(level: float) -> int:
  return min(max(int(level * 4), 1), 8)


# name -> f(image, level, seed, translate_const, cutout_const), where
# level = magnitude / MAX_LEVEL.
_OpFn = Callable[[tf.Tensor, float, tf.Tensor, float, float], tf.Tensor]
_OPS: dict[str, _OpFn] = {
    'autocontrast': lambda im, lv, s, t, c: _autocontrast(im),
    'equalize': lambda im, lv, s, t, c: _equalize(im),
    'invert': lambda im, lv, s, t, c: _invert(im),
    'rotate': lambda im, lv, s, t, c: _rotate(im, _random_sign(30. * lv, s)),
    'posterize': lambda im, lv, s, t, c: _posterize(im, _posterize_bits(lv)),
    'solarize': lambda im, lv, s, t, c: _solarize(im, int(lv * 256)),
    'color': lambda im, lv, s, t, c: _color(im, _enhance_factor(lv)),
    'contrast': lambda im, lv, s, t, c: _contrast(im, _enhance_factor(lv)),
    'brightness': lambda im, lv, s, t, c: _brightness(im, _enhance_factor(lv)),
    'sharpness': lambda im, lv, s, t, c: _sharpness(im, _enhance_factor(lv)),
    'shear_x': lambda im, lv, s, t, c: _shear_x(im, _random_sign(0.3 * lv, s)),
    'shear_y': lambda im, lv, s, t, c: _shear_y(im, _random_sign(0.3 * lv, s)),
    'translate_x': lambda im, lv, s, t, c: _translate_x(
        im, _random_sign(t * lv, s)),
    'translate_y': lambda im, lv, s, t, c: _translate_y(
        im, _random_sign(t * lv, s)),
    'cutout': lambda im, lv, s, t, c: _cutout(im, int(lv * c), s),
    'solarize_add': lambda im, lv, s, t, c: _solarize_add(im, int(lv * 110)),
}
assert tuple(_OPS) == OP_NAMES


# ---------------------------------------------------------------------------
# Public API.

# Nothing here branches in Python on tensor values (all Python `if`s test
# static arguments), so the AutoGraph conversion that tf.data.Dataset.map and
# tf.function apply by default is unnecessary; skip it for these functions and
# everything they call.
_no_autograph = tf.autograph.experimental.do_not_convert


@_no_autograph
def apply_op(image: tf.Tensor,
             name: str,
             magnitude: float,
             seed: SeedLike | None = None,
             *,
             translate_const: float = RANDAUGMENT_TRANSLATE_CONST,
             cutout_const: float = RANDAUGMENT_CUTOUT_CONST) -> tf.Tensor:
  """Applies the op `name` at `magnitude` to a uint8 [H, W, 3] image.

  With level = magnitude / 10 (not capped at 1), the arguments are:
  rotate 30 * level degrees; shear_x/y 0.3 * level; translate_x/y
  translate_const * level pixels (the sign of these five is random);
  color/contrast/brightness/sharpness blend factor 1.8 * level + 0.1 (1.0 is
  the identity, at magnitude 5); posterize keeps int(4 * level) bits, clamped
  to [1, 8]; solarize inverts values >= int(256 * level) (identity from
  magnitude 10); solarize_add adds int(110 * level) to values < 128; cutout
  fills a square of half-size int(cutout_const * level) at a random position.
  autocontrast, equalize and invert ignore the magnitude. Geometric ops use
  nearest-neighbour sampling and fill uncovered pixels with 128, as does
  cutout.

  Args:
    image: uint8 tensor [H, W, 3].
    name: one of `OP_NAMES`.
    magnitude: non-negative Python number; may exceed 10.
    seed: int32/int64 tensor of shape [2]; required by the ops in
      `SEEDED_OPS` (random sign, cutout position), ignored by the others.
    translate_const: translation in pixels at magnitude 10 (RandAugment 100,
      AutoAugment 250 in the reference).
    cutout_const: cutout half-size at magnitude 10 (RandAugment 40,
      AutoAugment 100 in the reference).

  Returns:
    The augmented uint8 image, same shape as `image`.
  """
  if name not in _OPS:
    raise ValueError(
        f'Unknown augmentation op {name!r}; known ops: {", ".join(OP_NAMES)}.')
  level = _as_magnitude(magnitude) / MAX_LEVEL
  image = _as_image(image)
  if name in SEEDED_OPS:
    if seed is None:
      raise ValueError(f'Op {name!r} is random and needs a seed.')
    seed = _as_seed(seed)
  out = _OPS[name](image, level, seed, float(translate_const),
                   float(cutout_const))
  out.set_shape(image.shape)
  return out


def _apply_with_prob(image: tf.Tensor, name: str, prob: float,
                     magnitude: float, prob_seed: tf.Tensor,
                     op_seed: tf.Tensor, **consts) -> tf.Tensor:
  """Applies `name` with probability `prob` (decided by `prob_seed`)."""
  apply = functools.partial(apply_op, image, name, magnitude, op_seed,
                            **consts)
  if prob <= 0.0:
    return image
  if prob >= 1.0:
    return apply()
  should_apply = tf.random.stateless_uniform([], prob_seed) < prob
  return tf.cond(should_apply, apply, lambda: image)


@_no_autograph
def randaugment(image: tf.Tensor,
                seed: SeedLike,
                num_layers: int = 2,
                magnitude: float = 10.) -> tf.Tensor:
  """RandAugment (https://arxiv.org/abs/1909.13719), EfficientNet variant.

  Applies `num_layers` ops in sequence, each drawn uniformly from
  `RANDAUGMENT_OPS` and, as in the EfficientNet reference, always applied,
  all at the same `magnitude` (translate 100 px and cutout half-size 40 at
  magnitude 10).

  Args:
    image: uint8 tensor [H, W, 3].
    seed: int32/int64 tensor of shape [2]; equal seeds give equal outputs.
    num_layers: number of ops to apply (N in the paper).
    magnitude: shared magnitude (M in the paper), e.g. 9 to 28; values above
      10 extrapolate the argument ranges linearly.

  Returns:
    The augmented uint8 image, same shape as `image`.
  """
  if int(num_layers) != num_layers or num_layers < 0:
    raise ValueError(
        f'num_layers must be a non-negative int, got {num_layers}.')
  magnitude = _as_magnitude(magnitude)
  image = _as_image(image)
  seed = _as_seed(seed)
  if num_layers == 0:
    return image
  consts = dict(translate_const=RANDAUGMENT_TRANSLATE_CONST,
                cutout_const=RANDAUGMENT_CUTOUT_CONST)
  for layer_seed in _split(seed, int(num_layers)):
    select_seed, op_seed = _split(layer_seed, 2)
    index = tf.random.stateless_uniform(
        [], select_seed, minval=0, maxval=len(RANDAUGMENT_OPS), dtype=tf.int32)
    branches = [
        functools.partial(apply_op, image, name, magnitude, op_seed, **consts)
        for name in RANDAUGMENT_OPS
    ]
    image = tf.switch_case(index, branches)
  return image


@_no_autograph
def autoaugment(image: tf.Tensor, seed: SeedLike,
                policy: str = 'v0') -> tf.Tensor:
  """AutoAugment (https://arxiv.org/abs/1805.09501) with a fixed policy.

  Draws one sub-policy of `POLICIES[policy]` uniformly and applies each of its
  (op, probability, magnitude) entries in order, each with its probability
  (translate 250 px and cutout half-size 100 at magnitude 10).

  Args:
    image: uint8 tensor [H, W, 3].
    seed: int32/int64 tensor of shape [2]; equal seeds give equal outputs.
    policy: a key of `POLICIES` ('v0': the ImageNet policy).

  Returns:
    The augmented uint8 image, same shape as `image`.
  """
  if policy not in POLICIES:
    raise ValueError(f'Unknown AutoAugment policy {policy!r}; known policies: '
                     f'{", ".join(POLICIES)}.')
  image = _as_image(image)
  seed = _as_seed(seed)
  sub_policies = POLICIES[policy]
  max_ops = max(len(sub_policy) for sub_policy in sub_policies)
  select_seed, *op_seeds = _split(seed, 1 + 2 * max_ops)
  consts = dict(translate_const=AUTOAUGMENT_TRANSLATE_CONST,
                cutout_const=AUTOAUGMENT_CUTOUT_CONST)

  def make_branch(sub_policy: SubPolicy) -> Callable[[], tf.Tensor]:

    def branch() -> tf.Tensor:
      out = image
      for i, (name, prob, magnitude) in enumerate(sub_policy):
        out = _apply_with_prob(out, name, prob, magnitude, op_seeds[2 * i],
                               op_seeds[2 * i + 1], **consts)
      return out

    return branch

  index = tf.random.stateless_uniform(
      [], select_seed, minval=0, maxval=len(sub_policies), dtype=tf.int32)
  return tf.switch_case(index, [make_branch(sp) for sp in sub_policies])
