"""Tests for jaxcnn.models.nasnet and jaxcnn.models.genotype.

Shapes and parameter counts by jax.eval_shape (no compilation), with XLA's
own depthwise and 1x1 convolutions (the same parameters as the CPU defaults,
at half the tracing); behaviour on a CIFAR model of one cell per stage or on
single ops. Equivalence with Keras and timm is in
tests/test_convert_nasnet.py.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models
from jaxcnn.models import genotype
from jaxcnn.models import nasnet

# Trainable parameters at 1000 classes (CIFAR: 10), auxiliary head excluded:
# Keras NASNetMobile / NASNetLarge and timm nasnetalarge.
_PARAM_COUNTS = {'nasnet_mobile': (1000, 5_289_978),
                 'nasnet_large': (1000, 88_753_150),
                 'nasnet_cifar': (10, 3_346_538)}
# The auxiliary head at the default image size: its last conv spans the map
# left after the 5/3 pooling (Mobile 4x4 of 528 channels, Large 6x6 of 2016,
# CIFAR 4x4 of 384).
_AUX_COUNTS = {'nasnet_mobile': (1000, (14, 14, 528), 2_411_240),
               'nasnet_large': (1000, (21, 21, 2016), 4_567_784),
               'nasnet_cifar': (10, (16, 16, 384), 1_631_498)}
_NASNET_A = ('normal=0:sep5+1:sep3,1:sep5+1:sep3,0:avg3+1:id,1:avg3+1:avg3,'
             '0:sep3+0:id/1,2,3,4,5,6;reduce=0:sep5+1:sep7,0:max3+1:sep7,'
             '0:avg3+1:sep5,3:id+2:avg3,2:sep3+0:max3/3,4,5,6')
_IMAGES = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(
    np.float32)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize('name', sorted(_PARAM_COUNTS))
def test_trainable_param_count(name):
  num_classes, expected = _PARAM_COUNTS[name]
  model = models.create(name, num_classes=num_classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  assert _count(shapes['params']) == expected
  if name == 'nasnet_mobile':  # Keras' total counts the BN statistics too.
    assert _count(shapes) == 5_326_716


@pytest.mark.parametrize('name', sorted(_AUX_COUNTS))
def test_aux_head_param_count(name):
  num_classes, shape, expected = _AUX_COUNTS[name]
  conv = functools.partial(nn.Conv, use_bias=False)
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  head = nasnet.AuxHead(num_classes, conv, norm, nn.Dense)
  shapes = jax.eval_shape(head.init, jax.random.key(0), jnp.zeros((1, *shape)))
  assert _count(shapes['params']) == expected


def test_variants():
  large = models.create('nasnet_large')
  assert (large.num_cells, large.filters, large.stem_filters,
          large.skip_reduction, large.drop_path_rate) == (6, 168, 96, True,
                                                          0.3)
  cifar = models.create('nasnet_cifar')
  assert (cifar.stem, cifar.bn_momentum, cifar.bn_epsilon) == ('cifar', 0.9,
                                                               1e-5)
  assert nasnet.IMAGE_SIZES['nasnet_mobile'] == 224


def test_genotype_string_round_trips():
  assert genotype.parse('nasnet_a') == genotype.NASNET_A
  assert genotype.format_genotype(genotype.NASNET_A) == _NASNET_A
  assert genotype.parse(_NASNET_A) == genotype.NASNET_A
  other = genotype.parse('normal=0:dilsep3+1:conv1x7_7x1,2:max5+0:conv3x3;'
                         'reduce=0:max7+1:conv1x1,2:dilconv3+1:id')
  # Without '/...' a cell concatenates the block outputs nobody reads.
  assert other.normal.concat == (3,) and other.reduce.concat == (3,)
  assert genotype.parse(genotype.format_genotype(other)) == other


@pytest.mark.parametrize('text, message', [
    ('normal=0:sep5+1:sep3', 'no reduce cell'),
    ('normal=0:sep9+1:sep3;reduce=0:id+1:id', "normal block 0: unknown op 'sep9'"),
    ('normal=0:id+2:id;reduce=0:id+1:id', 'normal block 0: input 2 is not an '
     r'earlier state \(0..1\)'),
    ('normal=0:id+1:id/7;reduce=0:id+1:id', 'concatenated state 7 does not'),
    ('normal=0:id+1:id;reduce=0:id', r"reduce block 0: '0:id' is not"),
    ('normal=a:id+1:id;reduce=0:id+1:id', "input 'a' is not a state"),
    ('resnet', 'expected "normal=...;reduce=..."'),
])
def test_genotype_errors_are_one_line(text, message):
  with pytest.raises(ValueError, match=message) as error:
    genotype.parse(text)
  assert '\n' not in str(error.value)


def test_drop_path_rates_scale_with_depth():
  cells = nasnet.cell_configs(4, 44, 'imagenet', 0.3)
  assert [c.name for c in cells[:3]] == ['stem_0', 'stem_1', 'cell_0']
  assert len(cells) == 16 and cells[6].name == 'reduction_0'
  # Slim: rate (cell + 1) / total * (1 - keep), stem cells counted.
  np.testing.assert_allclose([c.drop_rate for c in cells],
                             0.3 * np.arange(1, 17) / 16)
  assert len(nasnet.cell_configs(6, 32, 'cifar', 0.4)) == 20


@pytest.mark.parametrize('padding, want_max, want_avg', [
    # 3x3 stride-2 pooling of a 3x3 all -1 map: one window, SAME pads 1.
    ('slim', -1.0, -1.0),   # Max ignores pads, average excludes them.
    ('keras', 0.0, -4 / 9),  # Zeros take part and count.
    ('timm', -1.0, -4 / 9),  # -inf max pads, zeros counted in the average.
])
def test_pool_borders(padding, want_max, want_avg):
  x = -jnp.ones((1, 3, 3, 1))
  assert nasnet.pool(x, 'max', 3, 2, padding).shape == (1, 2, 2, 1)
  np.testing.assert_allclose(nasnet.pool(x, 'max', 3, 2, padding)[0, 0, 0, 0],
                             want_max)
  np.testing.assert_allclose(nasnet.pool(x, 'avg', 3, 2, padding)[0, 0, 0, 0],
                             want_avg, rtol=1e-6)
  # Stride 1: every reference excludes the pads.
  np.testing.assert_allclose(nasnet.pool(x, 'avg', 3, 1, padding), -1.0)


def test_aux_logits_sown_in_training_only():
  model = models.create('nasnet_cifar', num_classes=10, aux_head=True,
                        num_cells=1)
  variables = jax.eval_shape(model.init, jax.random.key(0), _IMAGES)
  # It reads the second stage's output: 16x16 of 6 * 2F = 384 channels,
  # pooled 5/3 to 4x4.
  head = variables['params']['aux_head']
  assert head['conv_1']['kernel'].shape == (1, 1, 384, 128)
  assert head['conv_2']['kernel'].shape == (4, 4, 128, 768)
  variables = {k: variables[k] for k in ('params', 'batch_stats')}
  logits, state = jax.eval_shape(lambda v: model.apply(
      v, _IMAGES, train=True, progress=0.5, rngs={'dropout': jax.random.key(0)},
      mutable=['batch_stats', 'intermediates']), variables)
  (aux,) = state['intermediates'][nasnet.AUX_LOGITS]
  assert aux.shape == logits.shape == (2, 10)
  _, state = jax.eval_shape(lambda v: model.apply(
      v, _IMAGES, mutable=['intermediates']), variables)
  assert nasnet.AUX_LOGITS not in state.get('intermediates', {})


def test_drop_path_ramps_with_progress():
  op = nasnet.Op('sep3', filters=4, stride=1, drop_rate=0.5, padding='slim',
                 conv=functools.partial(nn.Conv, use_bias=False),
                 depthwise=functools.partial(nasnet.layers.DepthwiseConv,
                                             implementation='conv'),
                 norm=functools.partial(nn.BatchNorm, use_running_average=True))
  x = jnp.asarray(_IMAGES[:, :8, :8, :1] * np.ones(4, np.float32))
  x = jnp.concatenate([x] * 8)  # 16 samples: some are dropped at rate 0.5.
  variables = jax.jit(op.init, static_argnums=2)(jax.random.key(0), x,
                                                  False, 1.0)
  run = jax.jit(lambda seed, progress: op.apply(
      variables, x, True, progress, rngs={'dropout': jax.random.key(seed)}))
  eval_out = jax.jit(lambda: op.apply(variables, x, False, 1.0))()
  np.testing.assert_array_equal(run(1, 0.0), eval_out)  # Rate 0 at first.
  dropped = np.all(np.asarray(run(1, 1.0)) == 0, axis=(1, 2, 3))
  assert 0 < dropped.sum() < 16
  kept = np.asarray(run(1, 1.0))[~dropped]
  np.testing.assert_allclose(kept, np.asarray(eval_out)[~dropped] / 0.5,
                             rtol=1e-6)


def test_features_only_levels():
  model = models.create('nasnet_mobile', features_only=True)
  features = jax.eval_shape(lambda x: model.init_with_output(
      jax.random.key(0), x)[0], jnp.zeros((1, 64, 64, 3)))
  # Stem conv 31, stem cells 16, 8, reductions 4, 2.
  assert {level: f.shape for level, f in features.items()} == {
      1: (1, 31, 31, 32), 2: (1, 16, 16, 44), 3: (1, 8, 8, 264),
      4: (1, 4, 4, 528), 5: (1, 2, 2, 1056)}


def test_rejects_bad_fields():
  model = models.create('nasnet_cifar', num_classes=10)
  with pytest.raises(ValueError, match='padding must be one of'):
    jax.eval_shape(model.clone(padding='same').init, jax.random.key(0),
                   _IMAGES)
  with pytest.raises(ValueError, match='unknown op'):
    jax.eval_shape(model.clone(genotype='normal=0:foo+1:id;reduce=0:id+1:id')
                   .init, jax.random.key(0), _IMAGES)
