"""Tests for jaxcnn.models.efficientnet."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models
from jaxcnn.models import efficientnet
from jaxcnn.models import layers

pytestmark = pytest.mark.cost_seconds(90)

_PARAM_COUNTS = {
    'efficientnet_b0': 5_288_548,
    'efficientnet_b1': 7_794_184,
    'efficientnet_b2': 9_109_994,
    'efficientnet_b3': 12_233_232,
    'efficientnet_b4': 19_341_616,
    'efficientnet_b5': 30_389_784,
    'efficientnet_b6': 43_040_704,
    'efficientnet_b7': 66_347_960,
}
_IMAGES = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(
    np.float32)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _variables(module: nn.Module, *args, **kwargs):
  """Random variables for `module`, drawn in numpy.

  `module.init` would compile hundreds of PRNG calls, which takes minutes on a
  small CPU.
  """
  shapes = jax.eval_shape(functools.partial(module.init, **kwargs),
                          jax.random.key(0), *args)
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      value = rng.normal(0, np.prod(leaf.shape[:-1]) ** -0.5, leaf.shape)
    elif name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:  # bias, mean
      value = rng.normal(0, 0.1, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def _b0_variables():
  return _variables(models.create('efficientnet_b0', num_classes=10), _IMAGES)


@functools.partial(jax.jit, static_argnums=0)
def _train_step(model, variables, images, seed):
  return model.apply(variables, images, train=True,
                     rngs={'dropout': jax.random.key(seed)},
                     mutable=['batch_stats'])


def _train_logits(model, variables, seed):
  return np.asarray(_train_step(model, variables, _IMAGES, seed)[0])


@pytest.mark.parametrize('name', sorted(_PARAM_COUNTS))
def test_trainable_param_count(name):
  model = models.create(name)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  assert _count(shapes['params']) == _PARAM_COUNTS[name]


def test_image_sizes():
  assert efficientnet.IMAGE_SIZES == {
      f'efficientnet_b{i}': size
      for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}


def test_variant_coefficients():
  b5 = models.create('efficientnet_b5')
  assert (b5.width, b5.depth, b5.dropout_rate) == (1.6, 2.2, 0.4)
  assert b5.drop_connect_rate == 0.2
  assert (b5.padding, b5.bn_momentum, b5.bn_epsilon) == ('same', 0.99, 1e-3)


@pytest.mark.parametrize('filters, width, expected', [
    (32, 2.0, 64), (1280, 2.0, 2560),  # B7 stem and head.
    (32, 1.4, 48), (1280, 1.4, 1792),  # B4 stem and head.
    (32, 1.1, 32), (16, 1.1, 16), (1280, 1.1, 1408),  # B2.
    (40, 1.2, 48), (112, 1.8, 200), (24, 1.0, 24),
])
def test_round_filters(filters, width, expected):
  assert efficientnet.round_filters(filters, width) == expected


@pytest.mark.parametrize('repeats, depth, expected', [
    (1, 1.0, 1), (1, 1.1, 2), (4, 1.1, 5), (3, 1.4, 5), (4, 3.1, 13),
    (2, 2.6, 6),
])
def test_round_repeats(repeats, depth, expected):
  assert efficientnet.round_repeats(repeats, depth) == expected


def test_b0_block_table():
  configs = efficientnet.block_configs(1.0, 1.0, 0.2)
  assert [(c.stage, c.index) for c in configs][:4] == [
      (0, 0), (1, 0), (1, 1), (2, 0)]
  assert len(configs) == 16
  assert sum(c.residual for c in configs) == 9
  assert [c.stride for c in configs if c.index == 0] == [1, 2, 2, 2, 1, 2, 1]
  assert configs[-1].out_channels == 320


@pytest.mark.parametrize('width, depth', [(1.0, 1.0), (1.4, 1.8), (2.0, 3.1)])
def test_residual_rule(width, depth):
  for c in efficientnet.block_configs(width, depth, 0.2):
    assert c.residual == (c.stride == 1 and c.in_channels == c.out_channels)


def test_drop_rates_rise_linearly():
  configs = efficientnet.block_configs(2.0, 3.1, 0.2)  # B7: 55 blocks.
  rates = np.array([c.drop_rate for c in configs])
  assert len(rates) == 55
  np.testing.assert_allclose(rates, 0.2 * np.arange(55) / 55)
  assert rates[0] == 0 and rates[-1] < 0.2


@pytest.mark.parametrize('stride, out_channels, residual', [
    (1, 16, True), (2, 16, False), (1, 24, False)])
def test_mbconv_residual(stride, out_channels, residual):
  config = efficientnet.BlockConfig(
      stage=0, index=0, in_channels=16, out_channels=out_channels,
      expand_ratio=6, kernel_size=3, stride=stride, drop_rate=0.0)
  block = efficientnet.MBConv(
      config, nn.Conv, layers.DepthwiseConv,
      functools.partial(nn.BatchNorm, use_running_average=True), 'same')
  x = _IMAGES[:, :8, :8, :1] * np.ones(16, np.float32)
  variables = _variables(block, x, train=False)
  # A zero final BN silences the branch: the block is then x or 0.
  zeros = jnp.zeros(out_channels)
  variables['params']['project_bn'] = {'scale': zeros, 'bias': zeros}
  out = block.apply(variables, x, train=False)
  np.testing.assert_array_equal(out, x if residual else 0)


def test_b0_names_and_shapes():
  params = _b0_variables()['params']
  blocks = {f'blocks_{c.stage}_{c.index}'
            for c in efficientnet.block_configs(1.0, 1.0, 0.2)}
  assert set(params) == blocks | {'stem_conv', 'stem_bn', 'head_conv',
                                  'head_bn', 'head'}
  assert set(params['blocks_0_0']) == {
      'dw_conv', 'dw_bn', 'se_reduce', 'se_expand', 'project_conv',
      'project_bn'}
  block = params['blocks_2_0']
  assert set(block) == {
      'expand_conv', 'expand_bn', 'dw_conv', 'dw_bn', 'se_reduce',
      'se_expand', 'project_conv', 'project_bn'}
  assert block['expand_conv']['kernel'].shape == (1, 1, 24, 144)
  assert block['dw_conv']['kernel'].shape == (5, 5, 1, 144)
  # SE squeezes to a quarter of the block input width (24), not of 144.
  assert block['se_reduce']['kernel'].shape == (1, 1, 144, 6)
  assert block['se_expand']['kernel'].shape == (1, 1, 6, 144)
  assert block['project_conv']['kernel'].shape == (1, 1, 144, 40)
  assert params['stem_conv']['kernel'].shape == (3, 3, 3, 32)
  assert params['head_conv']['kernel'].shape == (1, 1, 320, 1280)
  assert params['head']['kernel'].shape == (1280, 10)


def test_initialisers():
  key = jax.random.key(0)
  conv = efficientnet.conv_kernel_init(key, (1, 1, 320, 1280))
  np.testing.assert_allclose(np.std(conv), np.sqrt(2 / 1280), rtol=0.01)
  # TF's depthwise fan_out is k * k (channel multiplier 1), not k * k * C.
  depthwise = efficientnet.depthwise_kernel_init(key, (5, 5, 1, 2000))
  np.testing.assert_allclose(np.std(depthwise), np.sqrt(2 / 25), rtol=0.02)
  dense = np.asarray(efficientnet.dense_kernel_init(key, (1280, 1000)))
  bound = 1 / np.sqrt(1000)
  assert 0.99 * bound < np.abs(dense).max() <= bound


def test_forward_shape_and_eval_determinism():
  model = models.create('efficientnet_b0', num_classes=10)
  variables = _b0_variables()
  first = model.apply(variables, _IMAGES)
  second = model.apply(variables, _IMAGES)
  assert first.shape == (2, 10) and first.dtype == jnp.float32
  assert np.isfinite(first).all() and np.abs(first).max() > 1e-2
  np.testing.assert_array_equal(first, second)


def test_drop_path_only_in_train():
  model = models.create('efficientnet_b0', num_classes=10, dropout_rate=0.0,
                        drop_connect_rate=0.5)
  variables = _b0_variables()
  assert not np.allclose(_train_logits(model, variables, 1),
                         _train_logits(model, variables, 2))
  off = model.clone(drop_connect_rate=0.0)
  np.testing.assert_array_equal(_train_logits(off, variables, 1),
                                _train_logits(off, variables, 2))


def test_dropout_only_in_train():
  model = models.create('efficientnet_b0', num_classes=10, dropout_rate=0.5,
                        drop_connect_rate=0.0)
  variables = _b0_variables()
  assert not np.allclose(_train_logits(model, variables, 1),
                         _train_logits(model, variables, 2))


def test_train_updates_batch_stats():
  # Same fields as in test_drop_path_only_in_train: reuses its compilation.
  model = models.create('efficientnet_b0', num_classes=10, dropout_rate=0.0,
                        drop_connect_rate=0.0)
  variables = _b0_variables()
  _, updates = _train_step(model, variables, _IMAGES, 0)
  old = variables['batch_stats']['stem_bn']['mean']
  new = updates['batch_stats']['stem_bn']['mean']
  assert not np.allclose(old, new)


@pytest.mark.parametrize('padding, pads', [
    ('same', ((0, 1), (0, 1))),  # TF: the extra pixel goes bottom/right.
    ('symmetric', ((1, 1), (1, 1))),
])
def test_stem_padding(padding, pads):
  model = models.create('efficientnet_b0', num_classes=10, padding=padding)
  variables = _b0_variables()
  _, state = model.apply(
      variables, _IMAGES, capture_intermediates=True, mutable=['intermediates'])
  expected = jax.lax.conv_general_dilated(
      _IMAGES, variables['params']['stem_conv']['kernel'], (2, 2), pads,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_allclose(
      state['intermediates']['stem_conv']['__call__'][0], expected,
      rtol=1e-5, atol=1e-5)


def test_padding_modes_differ():
  model = models.create('efficientnet_b0', num_classes=10)
  variables = _b0_variables()
  same = model.apply(variables, _IMAGES)
  symmetric = model.clone(padding='symmetric').apply(variables, _IMAGES)
  assert np.abs(same - symmetric).max() > 1e-3 * np.abs(same).max()
  with pytest.raises(ValueError, match='padding'):
    model.clone(padding='valid').apply(variables, _IMAGES)


def test_bfloat16_compute_keeps_float32_state():
  model = models.create('efficientnet_b0', num_classes=10,
                        dtype=jnp.bfloat16)
  variables = _variables(model, _IMAGES)  # Dtypes come from model.init.
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32
  logits, updates = _train_step(model, variables, _IMAGES, 0)
  assert logits.dtype == jnp.bfloat16 and logits.shape == (2, 10)
  assert np.isfinite(np.asarray(logits, np.float32)).all()
  for leaf in jax.tree.leaves(updates):
    assert leaf.dtype == jnp.float32


def test_features_only():
  model = models.create('efficientnet_b0', features_only=True)
  variables = _variables(model, _IMAGES)
  assert not {'head_conv', 'head_bn', 'head'} & set(variables['params'])
  features, state = model.apply(
      variables, _IMAGES, capture_intermediates=True, mutable=['intermediates'])
  assert {level: f.shape for level, f in features.items()} == {
      1: (2, 32, 32, 16),
      2: (2, 16, 16, 24),
      3: (2, 8, 8, 40),
      4: (2, 4, 4, 112),
      5: (2, 2, 2, 320),
  }
  # Each level is the last block at its stride: stages 1, 2, 3, 5, 7 of the
  # 1-indexed table.
  blocks = state['intermediates']
  for level, block in [(1, 'blocks_0_0'), (2, 'blocks_1_1'),
                       (3, 'blocks_2_1'), (4, 'blocks_4_2'),
                       (5, 'blocks_6_0')]:
    np.testing.assert_array_equal(features[level],
                                  blocks[block]['__call__'][0])


def test_rejects_wrong_channels():
  model = models.create('efficientnet_b0', num_classes=10)
  with pytest.raises(ValueError, match='EfficientNet'):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 1)))
