"""Converted torchvision / timm weights reproduce the reference logits."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy
import torch

from jaxcnn import checkpoint
from jaxcnn import convert
from tests import torch_refs

# Forward checks: (jaxcnn name, source, reference constructor, height, width).
_TV = lambda name: getattr(torch_refs.torchvision.models, name)
_TIMM = lambda name: torch_refs.timm.create_model(name)
_FORWARD = [
    ('resnet18', 'torchvision', _TV('resnet18'), 97, 129),
    ('resnet50', 'torchvision', _TV('resnet50'), 97, 129),
    ('alexnet', 'torchvision', _TV('alexnet'), 97, 129),
    ('squeezenet1_0', 'torchvision', _TV('squeezenet1_0'), 97, 129),
    ('squeezenet1_1', 'torchvision', _TV('squeezenet1_1'), 97, 129),
    ('efficientnet_b0', 'torchvision', _TV('efficientnet_b0'), 67, 85),
    ('efficientnet_b0', 'timm_tf',
     lambda: _TIMM('tf_efficientnet_b0'), 67, 85),
    ('efficientnet_b0', 'timm', lambda: _TIMM('efficientnet_b0'), 67, 85),
]
# Key and shape coverage only: these share code with the forward checks.
_COVERAGE = (
    [(f'resnet{d}', 'torchvision', _TV(f'resnet{d}')) for d in (34, 101, 152)]
    + [(f'efficientnet_b{i}', 'torchvision', _TV(f'efficientnet_b{i}'))
       for i in range(1, 8)]
    + [(f'efficientnet_b{i}', 'timm_tf',
        lambda i=i: _TIMM(f'tf_efficientnet_b{i}')) for i in range(1, 8)])


def _reference(build) -> torch.nn.Module:
  """A reference model with random weights and BatchNorm statistics."""
  torch.manual_seed(0)
  model = build().eval()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.normal_(1, 0.1)
        module.bias.normal_(0, 0.1)
  return model


def _images(height: int, width: int) -> np.ndarray:
  return np.random.RandomState(0).randn(2, 3, height, width).astype(np.float32)


def _relative_error(got, want) -> float:
  return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


@pytest.mark.parametrize('name,source,build,height,width', _FORWARD,
                         ids=[f'{n}-{s}' for n, s, *_ in _FORWARD])
def test_eval_logits_match(name, source, build, height, width):
  reference = _reference(build)
  images = _images(height, width)
  with torch.no_grad():
    want = reference(torch.from_numpy(images)).numpy()
  model, variables = convert.from_torch(name, reference.state_dict(), source)
  with jax.default_matmul_precision('highest'):
    got = jax.jit(model.apply)(variables, images.transpose(0, 2, 3, 1))
  error = _relative_error(got, want)
  print(f'{name} {source} {height}x{width}: relative error {error:.1e}')
  assert error <= 1e-4


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
  assert _relative_error(got, want) <= 1e-4


@pytest.mark.parametrize('name,source,build', _COVERAGE,
                         ids=[f'{n}-{s}' for n, s, _ in _COVERAGE])
def test_every_variable_is_converted(name, source, build):
  state_dict = build().state_dict()
  model, variables = convert.from_torch(name, state_dict, source)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 64, 64, 3)))
  assert (jax.tree.map(lambda x: x.shape, variables) ==
          jax.tree.map(lambda x: x.shape, dict(shapes)))
  kernels = [k for k in state_dict if k.endswith('weight')]
  assert kernels


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
  assert convert.detect_source('resnet50', ['fc.weight']) == 'torchvision'
  assert convert.detect_source('resnet50', ['conv_stem.weight']) == 'timm'
  with pytest.raises(ValueError, match='timm_tf'):
    convert.detect_source('efficientnet_b0', ['conv_stem.weight'])


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
      ('efficientnet_b1', 'efficientnet_b1', 'timm'),
      ('efficientnet_b4', 'tf_efficientnet_b4', 'timm_tf')):
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
  fresh = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  merged = checkpoint.merge_pretrained(jax.device_get(fresh), variables)
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
