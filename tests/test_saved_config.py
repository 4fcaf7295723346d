"""Comparing a config with the one a workdir saved."""

import importlib
import json

import pytest

from jaxcnn import saved_config
from jaxcnn import workdir

_ADDED = {'data_shards': -1, 'model_kwargs.depthwise': 'auto'}


def _saved(tmp_path, config):
  path = tmp_path / 'config.json'
  path.write_text(json.dumps(config))
  return str(path)


def test_differences_name_each_changed_field(tmp_path):
  path = _saved(tmp_path, {'lr': 0.1, 'model': 'resnet50', 'seed': 0})
  assert saved_config.differences(
      path, {'lr': 0.5, 'model': 'resnet50', 'seed': 0}) == 'lr: 0.1 -> 0.5'
  assert saved_config.differences(
      path, {'lr': 0.5, 'model': 'resnet50', 'seed': 0},
      ignore={'lr'}) == ''
  assert saved_config.differences(str(tmp_path / 'none.json'), {'lr': 1}) == ''


def test_fields_added_later_count_as_their_old_behaviour(tmp_path):
  # Saved before `data_shards` and `model_kwargs.depthwise` existed.
  path = _saved(tmp_path, {'model': 'efficientnet_b0', 'model_kwargs': {}})
  current = {'model': 'efficientnet_b0', 'data_shards': -1,
             'model_kwargs': {'depthwise': 'auto'}}
  assert saved_config.differences(path, current, added=_ADDED) == ''
  assert saved_config.differences(path, current) == (
      "data_shards: None -> -1, model_kwargs: {} -> {'depthwise': 'auto'}")
  # A new value is still a different run.
  current.update(data_shards=4, model_kwargs={'depthwise': 'taps'})
  assert saved_config.differences(path, current, added=_ADDED) == (
      "data_shards: -1 -> 4, model_kwargs: {'depthwise': 'auto'} -> "
      "{'depthwise': 'taps'}")


def test_added_fields_are_not_forced_on_configs_without_them(tmp_path):
  path = _saved(tmp_path, {'model': 'resnet50', 'model_kwargs': {}})
  assert saved_config.differences(
      path, {'model': 'resnet50', 'model_kwargs': {}}, added=_ADDED) == ''


def test_write_replaces_the_file_whole(tmp_path):
  path = str(tmp_path / 'config.json')
  saved_config.write(path, {'seed': 1, 'lr': 0.1})
  saved_config.write(path, {'seed': 2})
  assert json.load(open(path)) == {'seed': 2}
  assert sorted(p.name for p in tmp_path.iterdir()) == ['config.json']
  assert saved_config.differences(path, {'seed': 3}) == 'seed: 2 -> 3'


@pytest.mark.parametrize('recipe', ['resnet50', 'squeezenet1_1',
                                    'efficientnet_b0'])
def test_recipes_saved_before_their_added_fields_resume(recipe, tmp_path):
  config = importlib.import_module(f'configs.{recipe}').get_config()
  current = json.loads(config.to_json_best_effort())
  # As saved before data_shards and the implementation fields existed.
  old = {**current, 'model_kwargs': {}}
  del old['data_shards']
  path = _saved(tmp_path, old)
  assert saved_config.differences(path, current,
                                  added=workdir.ADDED_FIELDS) == ''
  assert 'data_shards: None -> -1' in saved_config.differences(path, current)
