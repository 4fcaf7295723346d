"""The NASNet recipes train end to end on tiny mocked data: each its own
optimizer, schedule, stem, auxiliary head and drop path, the network narrowed
to one cell per stage at F=8 whose cells have one block each (compiling it is
most of the time; NASNet-A's own cells are checked against Keras and timm in
tests/test_convert_nasnet.py). Mobile and
Large are one ImageNet recipe (`configs/nasnet.py`) at two sizes: Large,
which has drop path, is trained; Mobile is checked to differ only in its
size, learning rate, weight decay and drop path."""

import importlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcnn import checkpoint
from jaxcnn import metrics
from jaxcnn import trainer

pytestmark = pytest.mark.cost_seconds(120)

# recipe: (mocked image side, optimizer, drop path rate). 80 px leaves the
# ImageNet stem's auxiliary head a 5x5 map for its 5x5 pool.
RECIPES = {
    'nasnet_cifar10': (32, 'sgd', 0.4),
    'nasnet_large': (80, 'rmsprop', 0.3),
}
STEPS = 80
# One block per cell, a separable conv and a pooling op, both with drop path.
ONE_BLOCK = 'normal=0:sep3+1:avg3;reduce=0:sep5+1:max3'


@pytest.mark.parametrize('recipe', sorted(RECIPES))
def test_nasnet_recipe_trains_its_extras_on_mocked_data(recipe, tmp_path):
  image_size, optimizer, drop_path_rate = RECIPES[recipe]
  config = importlib.import_module(f'configs.{recipe}').get_config()
  assert (config.optimizer, config.model_kwargs.drop_path_rate,
          config.model_kwargs.aux_head) == (optimizer, drop_path_rate, True)
  assert config.model_kwargs.genotype == 'nasnet_a'
  config.model_kwargs.genotype = ONE_BLOCK
  config.model_kwargs.num_cells = 1
  config.model_kwargs.filters = 8
  # The recipe's learning rate is for its batch of 32 or 1600; eight mocked
  # images need a larger one to be fitted in a few steps.
  config.update(dict(
      image_size=image_size, batch_size=8, eval_batch_size=8,
      num_steps=STEPS, log_every_steps=STEPS // 4, eval_every_steps=STEPS,
      checkpoint_every_steps=STEPS, learning_rate=0.1, lr_batch_size=0,
      progress_bar=False))
  with tfds.testing.mock_data(num_examples=8):
    final = trainer.train_and_evaluate(config, str(tmp_path))

  records = metrics.read_metrics(str(tmp_path))
  train = [r for r in records if 'train/loss' in r]
  assert [r['step'] for r in train] == [20, 40, 60, 80]
  losses = np.array([r['train/loss'] for r in train])
  aux_losses = np.array([r['train/aux_loss'] for r in train])
  assert np.isfinite(losses).all() and np.isfinite(aux_losses).all()
  assert losses[-1] < 0.9 * losses[0], losses
  assert aux_losses[-1] < 0.9 * aux_losses[0], aux_losses
  assert {'eval/loss', 'eval/accuracy', 'eval/top5'} <= set(final)
  _, meta = checkpoint.load_variables(str(tmp_path))
  assert (meta['model'], meta['model_kwargs']) == (
      config.model, config.model_kwargs.to_dict())


def test_nasnet_mobile_is_the_large_recipe_at_its_own_size():
  mobile = importlib.import_module('configs.nasnet_mobile').get_config()
  large = importlib.import_module('configs.nasnet_large').get_config()
  own = {'image_size': (224, 331), 'learning_rate': (2.0, 1.5),
         'weight_decay': (4e-5, 5e-5), 'model': ('nasnet_mobile',
                                                 'nasnet_large')}
  for field, values in own.items():
    assert (mobile[field], large[field]) == values, field
    mobile[field] = large[field]
  kwargs = {'num_cells': (4, 6), 'filters': (44, 168),
            'drop_path_rate': (0.0, 0.3)}
  for field, values in kwargs.items():
    assert (mobile.model_kwargs[field], large.model_kwargs[field]) == values
    mobile.model_kwargs[field] = large.model_kwargs[field]
  assert mobile.to_dict() == large.to_dict()
