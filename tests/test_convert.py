"""Converted torchvision / timm weights reproduce the reference logits."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy
import torch

from configs import efficientnet_b0
from configs import finetune_digits
from jaxcnn import checkpoint
from jaxcnn import convert
from jaxcnn import metrics
from jaxcnn import tasks
from jaxcnn import trainer
from tests import torch_refs

pytestmark = pytest.mark.cost_seconds(300)

_TV = torch_refs.torchvision.models.get_model_builder


def _timm(name: str):
  return functools.partial(torch_refs.timm.create_model, name)


_RESNET_SIZE = (97, 129)  # Odd and non-square: catches padding mistakes.
_EFFICIENTNET_SIZE = (67, 85)
_EFFICIENTNET_SOURCES = {
    'torchvision': lambda i: _TV(f'efficientnet_b{i}'),
    'timm': lambda i: _timm(f'tf_efficientnet_b{i}'),
    'timm_torch': lambda i: _timm(f'efficientnet_b{i}'),
}
# (jaxcnn name, source, reference constructor, (height, width)). The
# EfficientNet variants differ only in how one block table is scaled, the
# sources in padding, BatchNorm epsilon and weight names: B0 is checked
# against all three sources, one scaled variant against each, and B4-B7
# (the same blocks, more and wider) convert with the reference's parameter
# count (test_every_larger_variant_converts_whole).
_MODELS = (
    [(name, 'torchvision', _TV(name), _RESNET_SIZE)
     for name in ('alexnet', 'squeezenet1_0', 'squeezenet1_1', 'resnet18',
                  'resnet34', 'resnet50', 'resnet101', 'resnet152')]
    + [('resnet50', 'timm', _timm('resnet50'), _RESNET_SIZE)]
    + [(f'efficientnet_b{i}', source, _EFFICIENTNET_SOURCES[source](i),
        _EFFICIENTNET_SIZE)
       for source, variants in (('torchvision', (0, 1)), ('timm', (0, 3)),
                                ('timm_torch', (0, 2)))
       for i in variants])
# The standard 224x224 input, once per family and source.
_STANDARD = [(name, source, build, (224, 224))
             for name, source, build, _ in _MODELS
             if name in ('alexnet', 'squeezenet1_1', 'resnet50',
                         'efficientnet_b0')]


def _reference(build) -> torch.nn.Module:
  """A reference model with random weights and BatchNorm statistics."""
  torch.manual_seed(0)
  return torch_refs.randomize_batch_norm(build().eval())


def _images(height: int, width: int) -> np.ndarray:
  return np.random.RandomState(0).randn(2, 3, height, width).astype(np.float32)


def _relative_error(got, want) -> float:
  return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


@pytest.mark.parametrize(
    'name,source,build,size', _MODELS + _STANDARD,
    ids=[f'{n}-{s}-{h}x{w}' for n, s, _, (h, w) in _MODELS + _STANDARD])
def test_eval_logits_match(name, source, build, size):
  reference = _reference(build)
  images = _images(*size)
  with torch.no_grad():
    want = reference(torch.from_numpy(images)).numpy()
  model, variables = convert.from_torch(name, reference.state_dict(), source)
  with jax.default_matmul_precision('highest'):
    got = jax.jit(model.apply)(variables, images.transpose(0, 2, 3, 1))
  error = _relative_error(got, want)
  print(f'{name} {source} {size}: relative error {error:.1e}')
  assert error <= 1e-4


@pytest.mark.parametrize('variant,source', [
    (4, 'torchvision'), (5, 'timm_torch'), (6, 'timm'), (7, 'torchvision')])
def test_every_larger_variant_converts_whole(variant, source):
  """Every reference weight lands in a jaxcnn variable of its shape (from_torch
  refuses any missing, unexpected or mis-shaped one), nothing added."""
  state_dict = _EFFICIENTNET_SOURCES[source](variant)().state_dict()
  _, variables = convert.from_torch(f'efficientnet_b{variant}', state_dict,
                                    source)
  assert sum(np.size(x) for x in jax.tree.leaves(variables)) == sum(
      v.numel() for k, v in state_dict.items()
      if not k.endswith('num_batches_tracked'))


def test_the_resolution_catches_padding_mistakes():
  """TF weights with torch padding and BatchNorm eps visibly disagree."""
  reference = _reference(_timm('tf_efficientnet_b0'))
  images = _images(67, 85)
  with torch.no_grad():
    want = reference(torch.from_numpy(images)).numpy()
  model, variables = convert.from_torch('efficientnet_b0',
                                        reference.state_dict(), 'timm_torch')
  with jax.default_matmul_precision('highest'):
    got = jax.jit(model.apply)(variables, images.transpose(0, 2, 3, 1))
  assert _relative_error(got, want) > 1e-3


@pytest.mark.parametrize('name,source,build', [
    ('resnet50', 'torchvision', _TV('resnet50')),
    ('efficientnet_b0', 'torchvision', _TV('efficientnet_b0')),
], ids=['resnet50', 'efficientnet_b0'])
def test_train_logits_match(name, source, build):
  """Batch statistics; only BatchNorm is in train mode (no dropout)."""
  reference = _reference(build)
  for module in reference.modules():
    module.train(isinstance(module, torch.nn.BatchNorm2d))
  images = _images(65, 71)
  with torch.no_grad():
    want = reference(torch.from_numpy(images)).numpy()
  model, variables = convert.from_torch(name, reference.state_dict(), source)
  if name.startswith('efficientnet'):
    model = model.clone(dropout_rate=0.0, drop_connect_rate=0.0)
  with jax.default_matmul_precision('highest'):
    got, _ = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
            variables, images.transpose(0, 2, 3, 1))
  error = _relative_error(got, want)
  print(f'{name} {source} train mode: relative error {error:.1e}')
  assert error <= 1e-4


def test_problems_are_listed_together():
  state_dict = _TV('resnet18')().state_dict()
  del state_dict['layer1.0.conv1.weight']
  state_dict['layer9.0.conv1.weight'] = state_dict['conv1.weight']
  state_dict['layer2.0.bn1.running_var'] = torch.zeros(7)
  with pytest.raises(ValueError) as error:
    convert.from_torch('resnet18', state_dict)
  message = str(error.value)
  assert 'missing params/layer1_0/conv1/kernel' in message
  assert 'unexpected layer9.0.conv1.weight' in message
  assert 'shape of layer2.0.bn1.running_var' in message


@pytest.mark.parametrize('name,source,match', [
    ('resnet50', 'torchvision', 'shape of'),  # resnet18 weights.
    ('alexnet', 'torchvision', 'unexpected'),
    ('resnet18', 'nonsense', 'Known sources: torchvision, timm'),
    ('squeezenet1_0', 'timm', 'Known sources: torchvision.'),
    ('lenet', 'torchvision', 'Convertible models: alexnet'),
])
def test_wrong_model_or_source(name, source, match):
  state_dict = _TV('resnet18')().state_dict()
  with pytest.raises(ValueError, match=match):
    convert.from_torch(name, state_dict, source)


def test_detect_source():
  assert convert.detect_source(['fc.weight']) == 'torchvision'
  assert convert.detect_source(['conv_stem.weight']) == 'timm'
  assert convert.detect_source(['features.0.0.weight']) == 'torchvision'


def test_preprocessing_matches_the_references():
  for name in ('alexnet', 'resnet50', 'efficientnet_b3'):
    transforms = torch_refs.torchvision.models.get_model_weights(
        name).IMAGENET1K_V1.transforms()
    assert convert.preprocessing(name, 'torchvision') == {
        'mean': transforms.mean, 'std': transforms.std,
        'crop_size': transforms.crop_size[0],
        'resize_size': transforms.resize_size[0],
        'interpolation': transforms.interpolation.value}
  for name, timm_name, source in (
      ('resnet50', 'resnet50', 'timm'),
      ('efficientnet_b1', 'efficientnet_b1', 'timm_torch'),
      ('efficientnet_b4', 'tf_efficientnet_b4', 'timm')):
    cfg = torch_refs.timm.models.get_pretrained_cfg(timm_name)
    crop = cfg.input_size[-1]
    assert convert.preprocessing(name, source) == {
        'mean': list(cfg.mean), 'std': list(cfg.std), 'crop_size': crop,
        'resize_size': int(crop / cfg.crop_pct),
        'interpolation': cfg.interpolation}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-m', 'jaxcnn.convert', *args], capture_output=True,
      text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize('suffix', ['pth', 'safetensors'])
def test_cli_round_trip(tmp_path, suffix):
  state_dict = _reference(_TV('resnet18')).state_dict()
  weights = str(tmp_path / f'resnet18.{suffix}')
  if suffix == 'pth':
    torch.save({'state_dict': state_dict}, weights)
  else:
    safetensors_numpy.save_file(
        {k: v.numpy() for k, v in state_dict.items()}, weights)
  out = str(tmp_path / 'converted')
  args = ('--model=resnet18', '--source=torchvision', f'--weights={weights}',
          f'--out={out}')
  result = _run_cli(*args)
  assert result.returncode == 0, result.stderr
  variables, meta = checkpoint.load_variables(out)
  model, want = convert.from_torch('resnet18', state_dict)
  jax.tree.map(np.testing.assert_array_equal, variables, want)
  fresh = jax.tree.map(
      lambda x: np.zeros(x.shape, x.dtype),
      jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  merged = checkpoint.merge_pretrained(fresh, variables)
  jax.tree.map(np.testing.assert_array_equal, merged, want)
  assert meta['model'] == 'resnet18' and meta['num_classes'] == 1000
  assert meta['preprocessing']['crop_size'] == 224

  again = _run_cli(*args)
  assert again.returncode != 0 and 'not empty' in again.stderr


def test_cli_errors_are_one_line(tmp_path):
  truncated = tmp_path / 'truncated.pth'
  torch.save(_TV('squeezenet1_1')().state_dict(), truncated)
  truncated.write_bytes(truncated.read_bytes()[:1000])
  whole = tmp_path / 'whole.pth'
  torch.save(_TV('squeezenet1_1')().state_dict(), whole)
  for args in ((f'--weights={truncated}', '--model=squeezenet1_1'),
               (f'--weights={whole}', '--model=alexnet'),
               (f'--weights={whole}', '--model=squeezenet1_1',
                '--source=bogus')):
    result = _run_cli(*args, f'--out={tmp_path / "out"}')
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr


def test_finetuning_a_converted_resnet18_on_digits(data_dir, tmp_path):
  state_dict = _reference(_TV('resnet18')).state_dict()
  _, variables = convert.from_torch('resnet18', state_dict)
  pretrained = str(tmp_path / 'pretrained')
  convert.save(pretrained, variables, {'model': 'resnet18'})
  config = finetune_digits.get_config()
  config.update(dict(data_dir=data_dir, init_from=pretrained, image_size=32,
                     num_steps=16, log_every_steps=4, eval_every_steps=16,
                     progress_bar=False))
  workdir = str(tmp_path / 'finetuned')
  trainer.train_and_evaluate(config, workdir)
  records = metrics.read_metrics(workdir)
  losses = [r['train/loss'] for r in records if 'train/loss' in r]
  assert losses[-1] < 0.7 * losses[0]
  # Frozen BatchNorm layers normalise with the stored statistics in training
  # too: evaluation sees the network that was trained (with batch statistics
  # in the frozen layers it was at chance, 0.1).
  train_accuracy = [r['train/accuracy'] for r in records
                    if 'train/accuracy' in r][-1]
  eval_accuracy = records[-1]['eval/accuracy']
  assert eval_accuracy > 0.5
  assert abs(eval_accuracy - train_accuracy) < 0.15
  tuned, _ = checkpoint.load_variables(workdir)
  assert tuned['params']['head']['kernel'].shape == (512, 10)
  # The frozen stem and first stage never moved, statistics included.
  for collection, leaf in (('params', 'scale'), ('batch_stats', 'mean')):
    np.testing.assert_array_equal(tuned[collection]['layer1_0']['bn1'][leaf],
                                  variables[collection]['layer1_0']['bn1'][leaf])
  np.testing.assert_array_equal(tuned['params']['conv1']['kernel'],
                                variables['params']['conv1']['kernel'])
  assert not np.array_equal(tuned['params']['layer4_1']['conv2']['kernel'],
                            variables['params']['layer4_1']['conv2']['kernel'])


def test_init_from_sets_the_model_up_as_the_weights_need(tmp_path):
  state_dict = _TV('efficientnet_b0')().state_dict()
  _, variables = convert.from_torch('efficientnet_b0', state_dict,
                                    'torchvision')
  out = str(tmp_path / 'converted')
  convert.save(out, variables, {'model': 'efficientnet_b0', 'model_kwargs':
                                convert.model_kwargs('efficientnet_b0',
                                                     'torchvision')})
  config = efficientnet_b0.get_config()
  config.update(dict(init_from=out, num_classes=10))
  model = tasks.create(config).model(trainer.model_defaults(config))
  assert (model.padding, model.bn_epsilon, model.num_classes) == (
      'symmetric', 1e-5, 10)
  config.init_from = None
  assert tasks.create(config).model(
      trainer.model_defaults(config)).padding == 'same'
