"""The lowering policy: resolution per platform, the layers it builds, and
every model family running it with unchanged parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from configs import quickstart
from jaxcnn import models
from jaxcnn.models import lowering

CPU = lowering.Lowering(depthwise='taps', pointwise='matmul',
                        small_output_conv='im2col', max_pool_backward='taps')


def _count(jaxpr_of, primitive: str) -> int:
  return str(jaxpr_of).count(primitive)


def test_auto_is_the_measured_fastest_on_cpu_and_xla_elsewhere():
  assert lowering.for_platform('cpu') == CPU
  assert lowering.XLA == lowering.Lowering('conv', 'conv', 'conv', 'xla')
  assert lowering.for_platform('gpu') == lowering.for_platform('tpu') == (
      lowering.XLA)
  assert lowering.for_platform('cpu', pointwise='conv', depthwise='auto') == (
      lowering.Lowering('taps', 'conv', 'im2col', 'taps'))
  assert lowering.for_platform('gpu', depthwise='pallas').depthwise == 'pallas'
  assert str(CPU) == ('depthwise=taps, pointwise=matmul, '
                      'small_output_conv=im2col, max_pool_backward=taps')


def test_unknown_choices_and_kinds_are_refused():
  with pytest.raises(ValueError, match="Unknown pointwise lowering 'cudnn'; "
                     'choose one of conv, matmul.'):
    lowering.Lowering(pointwise='cudnn')
  with pytest.raises(ValueError,
                     match=r"Unknown lowering kind\(s\) \['pool'\]"):
    lowering.for_platform('cpu', pool='xla')


def test_each_kind_switches_its_layers_on_its_own():
  x = jnp.ones((2, 2, 2, 6))

  def convolutions(policy, kernel):
    module = policy.conv(5, (kernel, kernel), padding='SAME')
    params = jax.eval_shape(module.init, jax.random.key(0), x)
    return _count(jax.make_jaxpr(module.apply)(params, x),
                  'conv_general_dilated')

  matmul = lowering.Lowering(pointwise='matmul')
  im2col = lowering.Lowering(small_output_conv='im2col')
  assert lowering.XLA.conv is nn.Conv  # Plain XLA, as models.create gives.
  assert [convolutions(p, 1) for p in (lowering.XLA, matmul, im2col)] == [
      1, 0, 1]
  assert [convolutions(p, 3) for p in (lowering.XLA, matmul, im2col)] == [
      1, 1, 0]

  def depthwise_convolutions(policy):
    module = policy.depthwise_conv(3)
    params = jax.eval_shape(module.init, jax.random.key(0), x)
    return _count(jax.make_jaxpr(module.apply)(params, x),
                  'conv_general_dilated')

  assert depthwise_convolutions(lowering.XLA) == 1
  assert depthwise_convolutions(lowering.Lowering(depthwise='taps')) == 0

  def scatters(policy):
    return _count(jax.make_jaxpr(jax.grad(
        lambda x: policy.max_pool(x, 2, 2).sum()))(x), 'select_and_scatter')

  assert scatters(lowering.XLA) == 1
  assert scatters(lowering.Lowering(max_pool_backward='taps')) == 0


_SMALL = {  # Each family at a small size (NASNet with one cell per stage).
    'lenet5': ((32, 32, 1), {}),
    'alexnet': ((63, 63, 3), {}),
    'resnet18': ((32, 32, 3), {}),
    'squeezenet1_1': ((32, 32, 3), {}),
    'efficientnet_b0': ((32, 32, 3), {}),
    'nasnet_cifar': ((32, 32, 3), {'num_cells': 1, 'filters': 8}),
}


@pytest.mark.parametrize('name', sorted(_SMALL))
def test_every_family_runs_the_policy_with_the_same_parameters(name):
  """A model built without a policy runs XLA's own layers; with the CPU's,
  its layers change (fewer XLA convolutions, or max pools with their own
  backward pass) and its parameter tree does not."""
  shape, fields = _SMALL[name]
  xla = models.create(name, num_classes=10, **fields)
  assert xla.lowering == lowering.XLA
  cpu = xla.clone(lowering=CPU)
  images = jnp.zeros((2, *shape))

  def variables_and_jaxpr(model):
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    return variables, str(jax.make_jaxpr(model.apply)(variables, images))

  xla_variables, xla_jaxpr = variables_and_jaxpr(xla)
  cpu_variables, cpu_jaxpr = variables_and_jaxpr(cpu)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), xla_variables) == (
      jax.tree.map(lambda a: (a.shape, a.dtype), cpu_variables))
  assert (_count(cpu_jaxpr, 'conv_general_dilated') <
          _count(xla_jaxpr, 'conv_general_dilated') or
          _count(cpu_jaxpr, 'custom_vjp') > _count(xla_jaxpr, 'custom_vjp'))


def test_lenet_computes_the_same_with_the_cpu_policy():
  """Its conv3 (5x5 on a 5x5 map) as im2col, its max pools' taps backward."""
  xla = models.create('lenet5', num_classes=10)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
  variables = jax.jit(xla.init)(jax.random.key(1), images)

  def loss_and_grads(model):
    return jax.jit(jax.value_and_grad(
        lambda v: jnp.sin(model.apply(v, images)).sum()))(variables)

  for ours, exact in zip(jax.tree.leaves(loss_and_grads(xla.clone(
      lowering=CPU))), jax.tree.leaves(loss_and_grads(xla))):
    np.testing.assert_allclose(ours, exact, rtol=1e-5, atol=1e-5)


def _config(**choices) -> ml_collections.ConfigDict:
  config = base.get_config()
  config.model = 'resnet18'
  config.lowering.update(choices)
  return config


def test_recorded_model_fields_of_old_runs_become_lowering_choices():
  assert lowering.split_model_kwargs(
      {'pointwise': 'conv', 'depthwise': 'auto', 'padding': 'same'}) == (
          {'padding': 'same'}, {'pointwise': 'conv', 'depthwise': 'auto'})
  # A choice the config leaves 'auto' takes the recorded one; an explicit
  # one wins.
  assert lowering.of_config(_config(), {'pointwise': 'conv'}, 'cpu') == (
      lowering.for_platform('cpu', pointwise='conv'))
  assert lowering.of_config(_config(pointwise='matmul'),
                            {'pointwise': 'conv'}, 'cpu').pointwise == 'matmul'
  # An old run's config.json has no `lowering`: every kind is 'auto'.
  old = ml_collections.ConfigDict({'model': 'resnet18'})
  assert lowering.of_config(old, {}, 'cpu') == CPU


def test_from_config_builds_the_model_with_the_runs_lowering():
  model = models.from_config(_config(depthwise='conv'), 10,
                             defaults={'pointwise': 'conv'})
  assert jax.default_backend() == 'cpu'
  assert model.lowering == lowering.Lowering('conv', 'conv', 'im2col', 'taps')
  assert models.from_config(_config(), 10, platform='gpu').lowering == (
      lowering.XLA)


def test_the_quickstart_keeps_xla_convolutions_for_its_published_figures():
  model = models.from_config(quickstart.get_config(), 10)
  assert model.lowering == lowering.Lowering('taps', 'matmul', 'conv', 'taps')
  images = jnp.zeros((1, 32, 32, 1))
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  assert _count(jax.make_jaxpr(model.apply)(variables, images),
                'conv_general_dilated') == 3  # Its conv3 too (5x5 on 5x5).
