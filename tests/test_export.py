"""jaxcnn.export: the reloaded function gives the model's eval-mode logits for
any batch size."""

import json

import jax
import numpy as np
import pytest

from jaxcnn import convert
from jaxcnn import export
from jaxcnn import models

PREPROCESSING = {'crop_size': 32, 'resize_size': 32,
                 'interpolation': 'bilinear', 'mean': [0.5, 0.4, 0.3],
                 'std': [0.2, 0.2, 0.2]}


def random_variables(model, image_shape, seed=0):
  """Variables drawn in numpy (no init to compile), BatchNorm statistics
  far from 0 and 1 so that train and eval mode differ."""
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          np.zeros((1, *image_shape), np.float32))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'var':
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    scale = np.prod(leaf.shape[:-1]) ** -0.5 if name == 'kernel' else 0.3
    return rng.normal(0.0, scale, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def save_checkpoint(path, name, image_shape, num_classes, preprocessing):
  """A `jaxcnn.convert`-style checkpoint of `name` with random weights:
  (model, variables)."""
  model = models.create(name, num_classes=num_classes)
  variables = random_variables(model, image_shape)
  convert.save(str(path), dict(variables, batch_stats=variables.get(
      'batch_stats', {})), {
          'model': name, 'source': 'test', 'num_classes': num_classes,
          'model_kwargs': {}, 'preprocessing': preprocessing})
  return model, variables


@pytest.fixture(scope='module')
def resnet18(tmp_path_factory):
  path = tmp_path_factory.mktemp('resnet18') / 'checkpoint'
  return (path, *save_checkpoint(path, 'resnet18', (32, 32, 3), 7,
                                 PREPROCESSING))


def test_reloaded_export_equals_the_model_for_two_batch_sizes(
    resnet18, tmp_path):
  path, model, variables = resnet18
  out = str(tmp_path / 'resnet18.export')
  export.export_checkpoint(str(path), out)
  reloaded = export.load(out)
  assert str(reloaded.in_avals[0]) == 'float32[batch,32,32,3]'
  images = np.random.default_rng(1).normal(size=(5, 32, 32, 3)).astype(
      np.float32)
  # Eval mode: with these BatchNorm statistics, batch statistics would give
  # other logits, and ones that depend on the batch.
  expected = np.asarray(jax.jit(model.apply)(variables, images))
  for batch in (images[:1], images):
    np.testing.assert_allclose(np.asarray(reloaded.call(batch)),
                               expected[:len(batch)], rtol=1e-5, atol=1e-5)
  with open(out + export.INFO_SUFFIX) as f:
    info = json.load(f)
  assert info['input_shape'] == [None, 32, 32, 3]
  assert info['num_classes'] == 7 and info['model'] == 'resnet18'
  assert info['preprocessing']['mean'] == pytest.approx(
      [127.5, 102.0, 76.5])
  assert info['platforms'] == ['cpu']


def test_an_existing_out_is_kept_and_an_image_size_is_needed(
    resnet18, tmp_path):
  out = tmp_path / 'model.export'
  out.write_bytes(b'earlier')
  with pytest.raises(FileExistsError, match=f'^{out} exists; pass '
                     '--overwrite to replace it.$'):
    export.export_checkpoint(str(resnet18[0]), str(out))
  assert out.read_bytes() == b'earlier'
  bare = tmp_path / 'bare'
  save_checkpoint(bare, 'lenet5', (32, 32, 1), 10, {})
  with pytest.raises(ValueError, match='records no image size; pass '
                     '--image_size'):
    export.export_checkpoint(str(bare), str(tmp_path / 'lenet.export'))
  with pytest.raises(ValueError, match=r'lenet5 at 28x28: LeNet-5 expects '
                     r'images of shape \[batch, 32, 32, 1\]'):
    export.export_checkpoint(str(bare), str(tmp_path / 'lenet.export'),
                             image_size=28)
