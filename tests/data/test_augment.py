"""Tests for jaxcnn.data.augment (RandAugment / AutoAugment in pure TF)."""

import numpy as np
import pytest
import tensorflow as tf

from jaxcnn.data import augment

SIZE = 48


def _test_image(size: int = SIZE, seed: int = 0) -> np.ndarray:
  """A smooth colour gradient plus a few flat discs; values in [30, 220].

  Channel ranges stay away from 0 and 255 so that autocontrast has work to
  do, and the discs give sharp edges for sharpness / equalize.
  """
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
  image = np.stack([40 + 150 * xx, 40 + 150 * yy, 60 + 80 * (xx + yy) / 2],
                   axis=-1)
  for _ in range(4):
    cy, cx = rng.uniform(0, size, size=2)
    radius = rng.uniform(size / 10, size / 4)
    disc = (yy * (size - 1) - cy)**2 + (xx * (size - 1) - cx)**2 < radius**2
    image[disc] = rng.uniform(30, 220, size=3)
  return np.round(image).astype(np.uint8)


IMAGE = _test_image()
SEED = np.array([17, 42], np.int64)

# Ops that are the identity at magnitude 0 (zero angle / shear / shift /
# addition / cutout size). Enhance ops are NOT: factor(0) = 0.1.
IDENTITY_AT_0 = ('rotate', 'shear_x', 'shear_y', 'translate_x', 'translate_y',
                 'solarize_add', 'cutout')
# Enhance ops: factor = 1.8 * m / 10 + 0.1 is exactly 1.0 (identity) at m=5.
ENHANCE_OPS = ('color', 'contrast', 'brightness', 'sharpness')


def _op(image, name, magnitude, seed=SEED, **kwargs) -> np.ndarray:
  return augment.apply_op(tf.constant(image), name, magnitude,
                          tf.constant(seed), **kwargs).numpy()


def _seeds(n: int, offset: int = 0) -> np.ndarray:
  return np.stack([np.arange(n) + offset, 1000 + 7 * np.arange(n)],
                  axis=1).astype(np.int64)


# ---------------------------------------------------------------------------
# Every op.


def test_op_names():
  assert len(augment.OP_NAMES) == len(set(augment.OP_NAMES)) == 16
  assert set(augment.RANDAUGMENT_OPS) == set(augment.OP_NAMES)
  assert augment.SEEDED_OPS <= set(augment.OP_NAMES)


@pytest.mark.parametrize('name', augment.OP_NAMES)
@pytest.mark.parametrize('magnitude', [0, 5, 10, 28])
def test_dtype_and_shape(name, magnitude):
  out = augment.apply_op(tf.constant(IMAGE), name, magnitude, SEED)
  assert out.dtype == tf.uint8
  assert out.shape == IMAGE.shape


@pytest.mark.parametrize('name', augment.OP_NAMES)
def test_changes_image(name):
  # Magnitude 5 except for the enhance ops, which are the identity at 5.
  magnitude = 10 if name in ENHANCE_OPS else 5
  assert np.any(_op(IMAGE, name, magnitude) != IMAGE)


@pytest.mark.parametrize('name', IDENTITY_AT_0)
def test_identity_at_magnitude_0(name):
  np.testing.assert_array_equal(_op(IMAGE, name, 0), IMAGE)


@pytest.mark.parametrize('name', ENHANCE_OPS)
def test_enhance_identity_at_factor_1(name):
  np.testing.assert_array_equal(_op(IMAGE, name, 5), IMAGE)
  # Magnitude 0 is factor 0.1, not the identity.
  assert np.any(_op(IMAGE, name, 0) != IMAGE)


def test_solarize_identity_at_magnitude_10_and_above():
  # Threshold int(256 * m / 10) >= 256 leaves every uint8 value unchanged.
  np.testing.assert_array_equal(_op(IMAGE, 'solarize', 10), IMAGE)
  np.testing.assert_array_equal(_op(IMAGE, 'solarize', 17), IMAGE)
  # Threshold 0 inverts everything.
  np.testing.assert_array_equal(_op(IMAGE, 'solarize', 0), 255 - IMAGE)


@pytest.mark.parametrize('name', augment.OP_NAMES)
def test_deterministic_for_seed(name):
  a = _op(IMAGE, name, 3, seed=[5, 6])
  b = _op(IMAGE, name, 3, seed=[5, 6])
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name', sorted(augment.SEEDED_OPS))
def test_seed_matters_for_random_ops(name):
  outs = {_op(IMAGE, name, 3, seed=s).tobytes() for s in _seeds(8)}
  assert len(outs) > 1


def test_seed_dtypes_agree():
  a = _op(IMAGE, 'rotate', 4, seed=np.array([3, 9], np.int32))
  b = _op(IMAGE, 'rotate', 4, seed=np.array([3, 9], np.int64))
  np.testing.assert_array_equal(a, b)


def test_unknown_op_raises():
  with pytest.raises(ValueError, match='known ops:.*rotate'):
    augment.apply_op(tf.constant(IMAGE), 'rotat', 5, SEED)


def test_random_op_needs_seed():
  with pytest.raises(ValueError, match='seed'):
    augment.apply_op(tf.constant(IMAGE), 'rotate', 5)
  # Deterministic ops do not.
  augment.apply_op(tf.constant(IMAGE), 'invert', 5)


def test_rejects_bad_inputs():
  with pytest.raises(TypeError):
    augment.apply_op(tf.constant(IMAGE, tf.float32), 'invert', 5)
  with pytest.raises(ValueError):
    augment.apply_op(tf.constant(IMAGE), 'invert', -1)
  with pytest.raises(TypeError):
    augment.apply_op(tf.constant(IMAGE), 'rotate', 5, tf.constant([1., 2.]))


# ---------------------------------------------------------------------------
# Exact values of individual ops.


def test_invert_values():
  image = np.array([[[0, 1, 255], [128, 127, 7]]], np.uint8)
  np.testing.assert_array_equal(
      _op(image, 'invert', 0), [[[255, 254, 0], [127, 128, 248]]])


@pytest.mark.parametrize('magnitude,bits', [(0, 1), (2.5, 1), (5, 2),
                                            (7.5, 3), (10, 4), (17, 6),
                                            (20, 8), (28, 8)])
def test_posterize_bits(magnitude, bits):
  # bits = int(4 * m / 10), clamped to [1, 8] (see augment.apply_op).
  values = np.arange(256, dtype=np.uint8)
  image = np.stack([values, values[::-1], values], -1).reshape(16, 16, 3)
  mask = (0xFF << (8 - bits)) & 0xFF
  np.testing.assert_array_equal(_op(image, 'posterize', magnitude),
                                image & mask)


def test_solarize_values():
  image = np.array([[[0, 127, 128], [200, 255, 64]]], np.uint8)
  # m=5 -> threshold 128: values >= 128 are inverted.
  np.testing.assert_array_equal(
      _op(image, 'solarize', 5), [[[0, 127, 127], [55, 0, 64]]])


def test_solarize_add_values():
  image = np.array([[[0, 100, 127], [128, 200, 255]]], np.uint8)
  # m=5 -> add int(55.0) = 55 to values < 128, clipping at 255.
  np.testing.assert_array_equal(
      _op(image, 'solarize_add', 5), [[[55, 155, 182], [128, 200, 255]]])
  # m=28 -> add 308: everything below 128 saturates.
  np.testing.assert_array_equal(
      _op(image, 'solarize_add', 28), [[[255, 255, 255], [128, 200, 255]]])


def test_autocontrast_values():
  # Channel 0 spans [10, 40] -> stretched to [0, 255] (truncating);
  # channel 1 is constant -> unchanged; channel 2 already spans [0, 255].
  image = np.array([[[10, 5, 0], [20, 5, 17]], [[30, 5, 200], [40, 5, 255]]],
                   np.uint8)
  expected = np.array(
      [[[0, 5, 0], [85, 5, 17]], [[170, 5, 200], [255, 5, 255]]], np.uint8)
  np.testing.assert_array_equal(_op(image, 'autocontrast', 0), expected)


def test_autocontrast_truncates():
  # span 7: (v - lo) * 255 / 7 = 0, 36.43, 72.86, ..., 255.
  image = np.repeat(np.arange(3, 11, dtype=np.uint8)[None, :, None], 3, -1)
  expected = (np.arange(8) * 255 // 7).astype(np.uint8)
  np.testing.assert_array_equal(_op(image, 'autocontrast', 0)[0, :, 0],
                                expected)


def test_equalize_values():
  # 1 x 1020 image. PIL's rule: step = (n - count(max value)) // 255 and
  # lut[v] = (count(values < v) + step // 2) // step, clipped to 255.
  # Channel 0: 255 x 0, 255 x 100, 510 x 200 -> step 2 -> 0, 128, 255.
  # Channel 1: constant -> step 0 -> unchanged.
  # Channel 2: 510 x 50, 510 x 60 -> step 2 -> 0, 255.
  c0 = np.repeat([0, 100, 200], [255, 255, 510])
  c1 = np.full(1020, 7)
  c2 = np.repeat([50, 60], [510, 510])
  image = np.stack([c0, c1, c2], -1)[None].astype(np.uint8)
  out = _op(image, 'equalize', 0)
  np.testing.assert_array_equal(out[0, :, 0],
                                np.repeat([0, 128, 255], [255, 255, 510]))
  np.testing.assert_array_equal(out[0, :, 1], c1)
  np.testing.assert_array_equal(out[0, :, 2], np.repeat([0, 255], [510, 510]))


def test_equalize_small_image_is_identity():
  # Fewer than 256 pixels of non-maximal value -> step 0 -> unchanged.
  image = np.array([[[0, 1, 255], [128, 127, 7]]], np.uint8)
  np.testing.assert_array_equal(_op(image, 'equalize', 0), image)


def test_equalize_matches_pil():
  pil_image_ops = pytest.importorskip('PIL.ImageOps')
  pil_image = pytest.importorskip('PIL.Image')
  image = _test_image(64, seed=3)
  expected = np.asarray(pil_image_ops.equalize(pil_image.fromarray(image)))
  np.testing.assert_array_equal(_op(image, 'equalize', 0), expected)


def test_brightness_clips_past_magnitude_10():
  # m=28 -> factor 5.14; values must saturate at 255, not wrap around.
  out = _op(IMAGE, 'brightness', 28)
  factor = np.float32(28 / 10 * 1.8 + 0.1)
  expected = np.clip(IMAGE.astype(np.float32) * factor, 0, 255).astype(
      np.uint8)
  np.testing.assert_array_equal(out, expected)
  assert out.max() == 255


def test_color_at_factor_0_is_grey():
  # color at factor 0 would be pure grey; m=0 (factor 0.1) is nearly grey.
  out = _op(IMAGE, 'color', 0).astype(int)
  assert np.abs(out - out.mean(-1, keepdims=True)).max() <= 12
  assert np.abs(IMAGE.astype(int) - IMAGE.mean(-1, keepdims=True)).max() > 40


def test_contrast_blends_towards_mean_grey():
  # factor 0.1: the output is much flatter than the input, and centred on
  # the input's mean grey level.
  out = _op(IMAGE, 'contrast', 0).astype(float)
  assert out.std() < 0.2 * IMAGE.std()
  grey = IMAGE @ np.array([0.299, 0.587, 0.114])
  assert abs(out.mean() - grey.mean()) < 3


def test_sharpness_keeps_border_and_flat_regions():
  image = np.full((8, 8, 3), 90, np.uint8)
  image[3:5, 3:5] = 200
  out = _op(image, 'sharpness', 10)
  # The border row/column is never filtered; far from the square the image
  # is flat and stays so.
  np.testing.assert_array_equal(out[0], image[0])
  np.testing.assert_array_equal(out[:, 0], image[:, 0])
  np.testing.assert_array_equal(out[:2, :2], image[:2, :2])
  # Hand-computed: smoothed (2, 3) = (5*90 + 6*90 + 2*200) // 13 = 106 and
  # smoothed (3, 3) = (5*200 + 5*90 + 3*200) // 13 = 157; blending with
  # factor 1.9 extrapolates away from them: 106 + 1.9 * (90 - 106) = 75.6 and
  # 157 + 1.9 * (200 - 157) = 238.7, truncated.
  np.testing.assert_array_equal(out[2, 3], [75, 75, 75])
  np.testing.assert_array_equal(out[3, 3], [238, 238, 238])


def test_rotate_90_is_rot90():
  # m=30 -> 90 degrees with a random sign; on an odd-sized square image the
  # nearest-neighbour rotation about the centre is exact.
  image = _test_image(33)
  ccw, cw = np.rot90(image, 1), np.rot90(image, -1)
  seen = set()
  for seed in _seeds(8):
    out = _op(image, 'rotate', 30, seed=seed)
    if np.array_equal(out, ccw):
      seen.add('ccw')
    else:
      np.testing.assert_array_equal(out, cw)
      seen.add('cw')
  assert seen == {'ccw', 'cw'}


def test_translate_x_shifts_and_fills():
  # m=1 -> 10 pixels (RandAugment constant 100 at m=10), random direction.
  seen = set()
  for seed in _seeds(8):
    out = _op(IMAGE, 'translate_x', 1, seed=seed)
    if np.all(out[:, :10] == 128):
      np.testing.assert_array_equal(out[:, 10:], IMAGE[:, :-10])
      seen.add('right')
    else:
      np.testing.assert_array_equal(out[:, :-10], IMAGE[:, 10:])
      np.testing.assert_array_equal(out[:, -10:], 128)
      seen.add('left')
  assert seen == {'left', 'right'}


def test_translate_constant_is_configurable():
  out = _op(IMAGE, 'translate_y', 1, translate_const=250)  # 25 pixels.
  assert (np.all(out[:25] == 128) and np.array_equal(out[25:], IMAGE[:-25])
          or np.all(out[-25:] == 128) and np.array_equal(out[:-25], IMAGE[25:]))


def test_shear_fixes_first_row_or_column():
  out = _op(IMAGE, 'shear_x', 10)  # x_in = x +/- 0.3 y.
  np.testing.assert_array_equal(out[0], IMAGE[0])
  assert np.any(out[-1] != IMAGE[-1])
  out = _op(IMAGE, 'shear_y', 10)  # y_in = y +/- 0.3 x.
  np.testing.assert_array_equal(out[:, 0], IMAGE[:, 0])
  assert np.any(out[:, -1] != IMAGE[:, -1])


def test_cutout_is_a_grey_square():
  # m=1 -> half-size 4: a square of at most 8 x 8, clipped at the border.
  for seed in _seeds(6):
    out = _op(IMAGE, 'cutout', 1, seed=seed)
    changed = np.any(out != IMAGE, axis=-1)
    rows, cols = np.nonzero(changed)
    assert 0 < changed.sum() <= 64
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert r1 - r0 <= 8 and c1 - c0 <= 8
    np.testing.assert_array_equal(out[r0:r1, c0:c1], 128)
    np.testing.assert_array_equal(out[~changed], IMAGE[~changed])


# ---------------------------------------------------------------------------
# Composed policies.


def _batch(n: int = 8) -> np.ndarray:
  return np.stack([_test_image(SIZE, seed=i) for i in range(n)])


def _eager(fn, images, seeds, **kwargs) -> np.ndarray:
  return np.stack([
      fn(tf.constant(im), tf.constant(s), **kwargs).numpy()
      for im, s in zip(images, seeds)
  ])


def _dataset(fn, images, seeds, **kwargs) -> np.ndarray:
  ds = tf.data.Dataset.from_tensor_slices((images, seeds))
  ds = ds.map(lambda im, s: fn(im, s, **kwargs))
  return np.stack([x.numpy() for x in ds])


POLICY_CASES = [
    pytest.param(augment.randaugment, dict(num_layers=2, magnitude=10),
                 id='randaugment-m10'),
    pytest.param(augment.randaugment, dict(num_layers=2, magnitude=28),
                 id='randaugment-m28'),
    pytest.param(augment.autoaugment, dict(policy='v0'), id='autoaugment-v0'),
]


@pytest.mark.parametrize('fn,kwargs', POLICY_CASES)
def test_policy_same_seed_same_output(fn, kwargs):
  images = _batch(4)
  seeds = _seeds(4)
  np.testing.assert_array_equal(
      _eager(fn, images, seeds, **kwargs), _eager(fn, images, seeds, **kwargs))


@pytest.mark.parametrize('fn,kwargs', POLICY_CASES)
def test_policy_in_dataset_map_matches_eager(fn, kwargs):
  # 8 images, each with two different per-element seeds, through one
  # (graph-mode) Dataset.map.
  images = _batch(8)
  seeds = np.concatenate([_seeds(8), _seeds(8, offset=100)])
  graph = _dataset(fn, np.concatenate([images, images]), seeds, **kwargs)
  assert graph.dtype == np.uint8 and graph.shape == (16,) + images.shape[1:]
  np.testing.assert_array_equal(graph[:8], _eager(fn, images, seeds[:8],
                                                  **kwargs))
  # Different seeds give different outputs for most images. (AutoAugment
  # leaves ~20% of images unchanged, and 'equalize' alone is a common outcome,
  # so some coincidences are expected.)
  num_different = sum(
      not np.array_equal(a, b) for a, b in zip(graph[:8], graph[8:]))
  assert num_different >= 5
  # Most images are actually augmented.
  inputs = np.concatenate([images, images])
  num_changed = sum(not np.array_equal(a, b) for a, b in zip(graph, inputs))
  assert num_changed >= 10


def test_apply_with_prob_frequency():
  image = tf.constant(IMAGE)
  applied = [
      not np.array_equal(
          augment._apply_with_prob(image, 'invert', 0.3, 0, tf.constant(s),
                                   tf.constant(s)).numpy(), IMAGE)
      for s in _seeds(200)
  ]
  assert 0.2 < np.mean(applied) < 0.4


def test_randaugment_always_applies_the_selected_op():
  # As in the EfficientNet reference, the chosen op is applied with
  # probability 1. At m=10 only 'solarize' (threshold 256) is a no-op on the
  # test image, so ~1/16 of single-layer outputs equal the input (~1/2 if ops
  # were applied with probability 1/2).
  seeds = _seeds(32)
  outs = _eager(augment.randaugment, np.stack([IMAGE] * 32), seeds,
                num_layers=1, magnitude=10)
  num_unchanged = sum(np.array_equal(out, IMAGE) for out in outs)
  assert num_unchanged <= 6


def test_randaugment_zero_layers_is_identity():
  np.testing.assert_array_equal(
      augment.randaugment(tf.constant(IMAGE), SEED, num_layers=0).numpy(),
      IMAGE)


def test_policy_traces_once_for_all_seeds():
  # The seed is a tensor: op selection happens in the graph, not in Python.
  fn = tf.function(lambda im, s: augment.randaugment(im, s, 2, 9))
  for seed in _seeds(3):
    fn(tf.constant(IMAGE), tf.constant(seed))
  assert fn.experimental_get_tracing_count() == 1


def test_policy_dynamic_image_size():
  # Works on images whose size is only known at run time.
  images = [_test_image(40), _test_image(56)]
  ds = tf.data.Dataset.from_generator(
      lambda: iter(images),
      output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  ds = ds.map(lambda im: augment.randaugment(im, tf.constant([1, 2]), 3, 9))
  for image, out in zip(images, ds):
    assert out.shape == image.shape


def test_autoaugment_v0_policy_table():
  policy = augment.POLICIES['v0']
  assert len(policy) == 25
  for sub_policy in policy:
    assert len(sub_policy) == 2
    for name, prob, magnitude in sub_policy:
      assert name in augment.OP_NAMES
      assert 0.0 <= prob <= 1.0 and 0 <= magnitude <= 10


def test_unknown_policy_raises():
  with pytest.raises(ValueError, match='known policies: v0'):
    augment.autoaugment(tf.constant(IMAGE), SEED, policy='v9')


def test_randaugment_rejects_bad_num_layers():
  with pytest.raises(ValueError):
    augment.randaugment(tf.constant(IMAGE), SEED, num_layers=-1)
