"""Every recipe in configs/ loads, is locked and names real models/datasets
with fields those models have."""

import importlib

import pytest

from jaxcnn import models
from jaxcnn.data import datasets
from tests import recipes

RECIPES = recipes.NAMES


def test_the_issue_recipes_exist():
  expected = {'quickstart', 'lenet5_mnist', 'resnet18_cifar10', 'resnet50',
              'alexnet', 'squeezenet1_1'} | {f'efficientnet_b{i}'
                                             for i in range(8)}
  assert expected <= set(RECIPES)


@pytest.mark.parametrize('recipe', RECIPES)
def test_recipe_loads_locked_with_known_model_and_dataset(recipe):
  config = importlib.import_module(f'configs.{recipe}').get_config()
  assert config.model in models.names()
  # Its model_kwargs are fields of its model (create refuses unknown ones).
  assert models.from_config(config, 10).num_classes == 10
  datasets.get_spec(config.dataset)
  with pytest.raises(AttributeError):
    config.no_such_field = 1  # Locked: typos cannot add fields.


def test_resnet50_recipe_matches_the_reference():
  config = importlib.import_module('configs.resnet50').get_config()
  assert (config.optimizer, config.nesterov, config.momentum) == ('sgd', True,
                                                                  0.9)
  assert config.learning_rate * config.batch_size / config.lr_batch_size == 0.4
  assert (config.schedule, config.warmup_epochs, config.num_epochs) == (
      'cosine', 5.0, 90.0)
  assert (config.weight_decay, config.label_smoothing) == (1e-4, 0.1)


@pytest.mark.parametrize('variant,size,crop,magnitude', [
    ('b0', 224, 0.875, 10.0), ('b4', 380, 380 / 412, 10.0),
    ('b5', 456, 456 / 488, 17.0), ('b7', 600, 600 / 632, 28.0)])
def test_efficientnet_recipe_follows_the_tpu_reference(variant, size, crop,
                                                       magnitude):
  config = importlib.import_module(
      f'configs.efficientnet_{variant}').get_config()
  assert config.image_size == size
  assert config.eval_crop_fraction == pytest.approx(crop)
  assert config.randaugment_magnitude == magnitude
  assert (config.optimizer, config.rmsprop_decay, config.momentum,
          config.rmsprop_epsilon) == ('rmsprop', 0.9, 0.9, 1e-3)
  assert (config.schedule, config.lr_decay_rate, config.lr_decay_epochs) == (
      'exponential', 0.97, 2.4)
  assert config.learning_rate * config.batch_size / 256 == pytest.approx(0.128)
  assert (config.weight_decay, config.weight_decay_mode, config.ema_decay,
          config.label_smoothing, config.num_epochs) == (1e-5, 'l2', 0.9999,
                                                         0.1, 350.0)
  assert config.interpolation == 'bicubic'
