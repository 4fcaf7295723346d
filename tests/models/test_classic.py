"""LeNet-5, AlexNet, SqueezeNet and ResNet: shapes, parameter counts, modes.

Full-size networks are only traced (`jax.eval_shape`); real forward passes use
small models at 64x64 and 'rbg' keys, whose init compiles much faster on CPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models

pytestmark = pytest.mark.cost_seconds(95)

# torchvision's counts (LeNet-5: the classic 10-class network).
PARAM_COUNTS = {
    'lenet5': 61_706,
    'alexnet': 61_100_840,
    'squeezenet1_0': 1_248_424,
    'squeezenet1_1': 1_235_496,
    'resnet18': 11_689_512,
    'resnet34': 21_797_672,
    'resnet50': 25_557_032,
    'resnet101': 44_549_160,
    'resnet152': 60_192_808,
}


def _key(seed=0):
  return jax.random.key(seed, impl='rbg')


def _images(name):
  """A batch of 2 images: 32x32x1 for LeNet-5, 64x64x3 for the others."""
  size = 32 if name == 'lenet5' else 64
  shape = (2, size, size, models.create(name).in_channels)
  return jnp.asarray(np.random.RandomState(0).randn(*shape), jnp.float32)


@functools.cache
def _shapes(name, num_classes, dtype=jnp.float32):
  """Abstract variables, logits and intermediates, without any FLOPs."""
  model = models.create(name, num_classes=num_classes, dtype=dtype)
  images = _images(name)
  variables = jax.eval_shape(model.init, _key(), images)
  logits, state = jax.eval_shape(
      functools.partial(model.apply, capture_intermediates=True), variables,
      images)
  return variables, logits, state['intermediates']


@functools.cache
def _init(name, **overrides):
  """A 5-class model and its initialised variables."""
  model = models.create(name, num_classes=5, **overrides)
  return model, jax.jit(model.init)(_key(), _images(name))


def test_names_lists_every_model():
  assert set(PARAM_COUNTS) <= set(models.names())


@pytest.mark.parametrize('name', sorted(PARAM_COUNTS))
def test_parameter_count(name):
  num_classes = 10 if name == 'lenet5' else 1000
  variables, logits, _ = _shapes(name, num_classes)
  assert sum(x.size for x in jax.tree.leaves(variables['params'])) == (
      PARAM_COUNTS[name])
  assert logits.shape == (2, num_classes)
  assert 'head' in variables['params']
  assert ('batch_stats' in variables) == name.startswith('resnet')


@pytest.mark.parametrize('name', sorted(PARAM_COUNTS))
def test_bfloat16_compute_float32_params(name):
  variables, logits, intermediates = _shapes(name, 7, jnp.bfloat16)
  assert logits.shape == (2, 7) and logits.dtype == jnp.bfloat16
  assert {x.dtype for x in jax.tree.leaves(variables)} == {
      jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(intermediates)} == {
      jnp.dtype(jnp.bfloat16)}


def test_resnet_layout():
  params18 = _shapes('resnet18', 1000)[0]['params']
  assert 'downsample_conv' not in params18['layer1_0']
  assert set(params18['layer2_0']) == {
      'conv1', 'bn1', 'conv2', 'bn2', 'downsample_conv', 'downsample_bn'}
  params50 = _shapes('resnet50', 1000)[0]['params']
  assert 'downsample_conv' in params50['layer1_0']  # 64 -> 256 channels.
  assert 'downsample_conv' not in params50['layer1_1']
  assert params50['layer4_2']['conv3']['kernel'].shape == (1, 1, 512, 2048)
  assert params50['head']['kernel'].shape == (2048, 1000)
  # v1.5: the bottleneck's 3x3 conv, not the first 1x1, has the stride.
  block = _shapes('resnet50', 1000)[2]['layer2_0']
  assert block['conv1']['__call__'][0].shape[1:3] == (16, 16)
  assert block['conv2']['__call__'][0].shape[1:3] == (8, 8)


def test_alexnet_and_squeezenet_layout():
  alexnet = _shapes('alexnet', 1000)[0]['params']
  assert alexnet['features_0']['kernel'].shape == (11, 11, 3, 64)
  assert alexnet['classifier_1']['kernel'].shape == (6 * 6 * 256, 4096)
  assert alexnet['head']['kernel'].shape == (4096, 1000)
  squeezenet = _shapes('squeezenet1_0', 1000)[0]['params']
  assert set(squeezenet['features_12']) == {'squeeze', 'expand1x1',
                                            'expand3x3'}
  assert squeezenet['features_12']['expand3x3']['kernel'].shape == (
      3, 3, 64, 256)
  assert squeezenet['head']['kernel'].shape == (1, 1, 512, 1000)


@pytest.mark.parametrize('name',
                         ['lenet5', 'alexnet', 'squeezenet1_1', 'resnet18'])
def test_forward_is_deterministic_in_eval(name):
  model, variables = _init(name)
  apply = jax.jit(model.apply)
  logits = apply(variables, _images(name))
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  np.testing.assert_array_equal(logits, apply(variables, _images(name)))


def test_train_mode_updates_batch_stats():
  model, variables = _init('resnet18', zero_init_residual=True)
  _, state = model.apply(variables, _images('resnet18') + 3.0, train=True,
                         capture_intermediates=True,
                         mutable=['batch_stats', 'intermediates'])
  # bn1 normalises conv1's output; it starts at mean 0, var 1 and moves 10%
  # (torch momentum 0.1) towards the (biased) batch statistics.
  conv1 = state['intermediates']['conv1']['__call__'][0]
  stats = state['batch_stats']['bn1']
  np.testing.assert_allclose(stats['mean'], 0.1 * conv1.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats['var'],
                             0.9 + 0.1 * conv1.var(axis=(0, 1, 2)), rtol=1e-4)
  assert np.abs(stats['mean']).max() > 1e-3
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         state['batch_stats'], variables['batch_stats'])
  assert all(jax.tree.leaves(changed))
  # Batch statistics, not the running ones, normalise in train mode.
  train_logits = state['intermediates']['__call__'][0]
  assert not np.allclose(train_logits,
                         model.apply(variables, _images('resnet18') + 3.0))


def test_zero_init_residual():
  params = _init('resnet18', zero_init_residual=True)[1]['params']
  for block in ('layer1_0', 'layer2_0', 'layer4_1'):
    np.testing.assert_array_equal(params[block]['bn2']['scale'], 0)
    np.testing.assert_array_equal(params[block]['bn1']['scale'], 1)
  np.testing.assert_array_equal(params['layer2_0']['downsample_bn']['scale'], 1)
  params = _init('resnet18')[1]['params']
  np.testing.assert_array_equal(params['layer1_0']['bn2']['scale'], 1)


@pytest.mark.parametrize('name', ['alexnet', 'squeezenet1_1'])
def test_dropout_depends_on_rng_only_in_train(name):
  model, variables = _init(name)
  images = _images(name)
  # The weights as an argument: closed over, AlexNet's 61M would be
  # compiled in as constants.
  apply = jax.jit(lambda v, rng: model.apply(v, images, train=True,
                                             rngs={'dropout': rng}))
  train = functools.partial(apply, variables)
  np.testing.assert_array_equal(train(_key(1)), train(_key(1)))
  assert not np.allclose(train(_key(1)), train(_key(2)))
  assert not np.allclose(train(_key(1)), model.apply(variables, images))


@pytest.mark.parametrize('name, shape, expected', [
    ('resnet18', (64, 64, 3), r'\[batch, height, width, 3\]'),
    ('alexnet', (2, 64, 64, 1), r'\[batch, height, width, 3\]'),
    ('squeezenet1_0', (2, 64, 64, 4), r'\[batch, height, width, 3\]'),
    ('lenet5', (2, 28, 28, 1), r'\[batch, 32, 32, 1\]'),
    ('lenet5', (2, 32, 32, 3), r'\[batch, 32, 32, 1\]'),
])
def test_wrong_image_shape(name, shape, expected):
  model = models.create(name, num_classes=5)
  with pytest.raises(ValueError, match=expected):
    jax.eval_shape(model.init, _key(), jnp.zeros(shape))


def test_unknown_model_lists_known_names():
  with pytest.raises(ValueError, match='resnet51') as error:
    models.create('resnet51')
  assert all(name in str(error.value) for name in PARAM_COUNTS)


def test_overrides():
  model = models.create('squeezenet1_1', num_classes=3, dtype=jnp.bfloat16)
  assert (model.num_classes, model.dtype) == (3, jnp.bfloat16)
  assert models.create('lenet5').in_channels == 1
  assert models.create('resnet50').in_channels == 3
  with pytest.raises(ValueError, match='no_such_field'):
    models.create('alexnet', no_such_field=1)
