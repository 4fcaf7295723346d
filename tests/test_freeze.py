"""Frozen parameters and BatchNorm layers (`--config.freeze`)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import freeze
from jaxcnn import state as state_lib
from jaxcnn import step as step_lib
from jaxcnn.tasks import classification


class _TinyBNNet(nn.Module):
  """Two conv+BN blocks: the smallest network with BatchNorm statistics."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    for name in ('stem', 'block'):
      x = nn.Conv(4, (3, 3), name=f'{name}_conv')(x)
      x = nn.BatchNorm(use_running_average=not train, name=f'{name}_bn')(x)
    return nn.Dense(10, name='head')(x.mean(axis=(1, 2)))


def _variables(model):
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  # Stored statistics far from the batch's, as in weights trained elsewhere.
  return {'params': variables['params'],
          'batch_stats': jax.tree.map(lambda s: s + 0.5,
                                      variables['batch_stats'])}


def _images(n=8):
  return jax.random.normal(jax.random.PRNGKey(2), (n, 8, 8, 1)) * 3.0 + 1.0


def _cross_entropy(logits, batch, intermediates):
  loss = jnp.mean(classification.cross_entropy(logits, batch['label']))
  return loss, {'loss': loss}


def test_mask_matches_paths():
  params = {'conv1': {'kernel': jnp.ones((3, 3, 1, 2))},
            'layer1_0': {'bn1': {'scale': jnp.ones(2)}},
            'head': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)}}
  assert freeze.mask(params, r'^(conv1|layer1_)') == {
      'conv1': {'kernel': True}, 'layer1_0': {'bn1': {'scale': True}},
      'head': {'kernel': False, 'bias': False}}
  assert not any(jax.tree.leaves(freeze.mask(params, '')))


def test_frozen_batch_norm_gives_the_same_output_in_train_and_eval_mode():
  model = _TinyBNNet()
  variables = _variables(model)
  images = _images()
  _, evaluated = model.apply(variables, images, train=False,
                             capture_intermediates=True)
  with freeze.batch_norm(r'^stem_'):
    _, trained = model.apply(variables, images, train=True,
                             capture_intermediates=True,
                             mutable=['batch_stats', 'intermediates'])
  outputs = {name: (evaluated['intermediates'][name]['__call__'][0],
                    trained['intermediates'][name]['__call__'][0])
             for name in ('stem_bn', 'block_bn')}
  np.testing.assert_array_equal(*outputs['stem_bn'])
  # The layer above, not frozen, still normalises with batch statistics.
  assert float(jnp.max(jnp.abs(outputs['block_bn'][0] -
                               outputs['block_bn'][1]))) > 0.1
  jax.tree.map(np.testing.assert_array_equal,
               trained['batch_stats']['stem_bn'],
               variables['batch_stats']['stem_bn'])


def test_train_step_keeps_frozen_parameters_and_statistics():
  model = _TinyBNNet()
  pattern = r'^stem_'
  tx = freeze.optimizer(optax.sgd(0.1), pattern)
  state = state_lib.create(model, tx, _variables(model), use_ema=False)
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fn=_cross_entropy, rng=jax.random.PRNGKey(1),
      learning_rate_fn=optax.constant_schedule(0.1), l2_weight=0.0,
      ema_decay=0.0, freeze_pattern=pattern))
  labels = jnp.arange(8) % 10
  new, _ = step(state, {'image': _images(), 'label': labels})
  for collection, moving in (('params', 'bias'), ('batch_stats', 'mean')):
    old_tree, new_tree = getattr(state, collection), getattr(new, collection)
    for leaf in old_tree['stem_bn']:
      np.testing.assert_array_equal(old_tree['stem_bn'][leaf],
                                    new_tree['stem_bn'][leaf])
    assert not np.allclose(old_tree['block_bn'][moving],
                           new_tree['block_bn'][moving])
  np.testing.assert_array_equal(state.params['stem_conv']['kernel'],
                                new.params['stem_conv']['kernel'])
