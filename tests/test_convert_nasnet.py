"""NASNet weights from Keras (both HDF5 layouts) and timm reproduce their
logits.

Kept to about a minute on 2 CPU cores: the references are narrow networks
(F = 8, penultimate 192) of the registered layouts, whose code paths differ
from the real ones in widths only, each built once, and each side runs
compiled once per dtype. Random weights and BatchNorm statistics,
float32-exact so that one reference serves float32 and float64; odd,
non-square inputs (both parities of Keras' border padding).
- Keras 3 (jax backend) `NASNet` with NASNetMobile's layout (4 cells per
  stage): float32 and float64 logits from both layouts, which hold the same
  weights; the Keras 3 layer-order table; the errors.
- Keras `NASNet` with NASNetLarge's layout (skip_reduction) at 1 cell per
  stage: float64 logits (Keras' names through a skip-reduction network).
- timm `NASNetALarge(num_features=192, stem_size=16)`, all 22 cells: float32
  and float64 logits.
- Full width: the CLI round trip of a Keras NASNetMobile; the parameter
  counts are in tests/models/test_nasnet.py.

Keras' float64 is not float64 in BatchNormalization: it computes in
`backend.result_type(inputs.dtype, 'float32')`, which Keras maps to float32
on every backend but tensorflow (`BIT64_TO_BIT32_DTYPE`), and casts back.
Layer by layer in float64, stem_conv1 agrees with ours exactly and the first
difference is stem_bn1 (1.3e-7 relative, Keras' against float64 NumPy; ours
against NumPy 1.5e-16), and the logits differ by 5.7e-8 (NASNetMobile's
layout at F = 8; 4.7e-8 at full width). The float64 references here run
with that map set to float64, as Keras' own tensorflow backend has it
(`_keras_float64`), and then agree with ours to ~3e-16.
"""

import contextlib
import os
import subprocess
import sys

os.environ['KERAS_BACKEND'] = 'jax'

import h5py  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from flax import traverse_util  # noqa: E402

from jaxcnn import checkpoint  # noqa: E402
from jaxcnn import convert  # noqa: E402
from jaxcnn import keras_import  # noqa: E402
from jaxcnn.models import lowering  # noqa: E402
from tests import torch_refs  # noqa: E402

keras = pytest.importorskip('keras')
from keras.src.backend.common import dtypes as keras_dtypes  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

pytestmark = pytest.mark.cost_seconds(120)

_KERAS_SIZE = (37, 54)
_TIMM_SIZE = (35, 49)
# Narrow widths: F = penultimate / 24 = 8 (the stem cells' F/4 and F/2 and
# their halves stay >= 1).
_PENULTIMATE, _FILTERS, _STEM = 192, 8, 16
# XLA's own depthwise and 1x1 convolutions: a quarter of the tracing and
# compiling of the CPU defaults ('taps', 'matmul'), which
# tests/models/test_layers.py proves equal to them (the CLI runs the
# defaults).
_XLA_CONVS = dict(lowering=lowering.XLA)
_EXACT = 1e-10  # float64 against float64: ~3e-16 measured.
_FLOAT32 = 1e-5  # float32 against float64: ~1e-7 measured.


def _images(height: int, width: int, channels_last: bool) -> np.ndarray:
  images = np.random.RandomState(0).randn(2, 3, height, width)
  return images.transpose(0, 2, 3, 1) if channels_last else images


def _relative_error(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())


# For one run of a NASNet compiling costs far more than running (and op by
# op, eagerly, more still): compiled at XLA's lowest optimisation level.
_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}


def _assert_logits(module, variables, images, want, tolerance, label):
  """`module`'s logits in the dtype of `images` against `want`."""
  if images.dtype == np.float64:
    module = module.clone(dtype=jnp.float64, param_dtype=jnp.float64)
  variables = jax.tree.map(lambda x: jnp.asarray(x, images.dtype), variables)
  apply = jax.jit(module.apply, compiler_options=_COMPILER_OPTIONS)
  with jax.default_matmul_precision('highest'):
    got = apply(variables, images)
  error = _relative_error(got, want)
  print(f'{label} {images.dtype} relative error {error:.2e}')
  assert error < tolerance


@contextlib.contextmanager
def _keras_float64():
  """Keras in float64, BatchNormalization too (module docstring)."""
  # Keras fixes its global dtype policy from floatx when first asked for it.
  floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
  keras.config.set_floatx('float64')
  keras.config.set_dtype_policy('float64')
  try:
    with jax.enable_x64(True), pytest.MonkeyPatch.context() as patch:
      patch.setitem(keras_dtypes.BIT64_TO_BIT32_DTYPE, 'float64', 'float64')
      yield
  finally:
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


def _zeros(shape, *args, dtype=None, **kwargs) -> np.ndarray:
  del args, kwargs
  return np.zeros(shape, dtype or keras.config.floatx())


def _keras_model(build, **kwargs):
  """`build(...)` with random weights and BatchNorm statistics, float32-exact.

  Keras draws each initial weight with jax.random, compiled per shape (most
  of the time of building a NASNet); they are all overwritten here, so the
  build draws zeros instead.
  """
  with pytest.MonkeyPatch.context() as patch:
    for draw in ('normal', 'uniform', 'truncated_normal'):
      patch.setattr(keras.src.backend.random, draw, _zeros)
    model = build(weights=None, classifier_activation=None, **kwargs)
  rng = np.random.RandomState(0)
  for layer in model.layers:
    if not layer.weights:
      continue
    if isinstance(layer, keras.layers.BatchNormalization):
      shape = layer.weights[0].shape
      values = [rng.normal(1, 0.1, shape), rng.normal(0, 0.1, shape),
                rng.normal(0, 0.1, shape), rng.uniform(0.5, 1.5, shape)]
    else:
      values = [rng.normal(0, np.prod(w.shape[:-1]) ** -0.5, w.shape)
                for w in layer.weights]
    layer.set_weights([v.astype(np.float32).astype(keras.config.floatx())
                       for v in values])
  return model


def _save_legacy(model, path: str) -> str:
  with h5py.File(path, 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  return path


def _narrow_keras(skip_reduction: bool, num_blocks: int):
  """A float64 Keras NASNet at F = 8 and its float64 logits of _images."""
  with _keras_float64():
    model = _keras_model(
        keras.src.applications.nasnet.NASNet, input_shape=(*_KERAS_SIZE, 3),
        penultimate_filters=_PENULTIMATE, num_blocks=num_blocks,
        stem_block_filters=_STEM, skip_reduction=skip_reduction, classes=10,
        default_size=224)
    call = jax.jit(
        lambda *args: model.stateless_call(*args, training=False)[0],
        compiler_options=_COMPILER_OPTIONS)
    logits = np.asarray(call([v.value for v in model.trainable_variables],
                             [v.value for v in model.non_trainable_variables],
                             _images(*_KERAS_SIZE, True)))
  return model, logits


@pytest.fixture(scope='module')
def keras_mobile(tmp_path_factory):
  """NASNetMobile's layout at F = 8: (model, float64 logits, {layout:
  weights file})."""
  model, logits = _narrow_keras(skip_reduction=False, num_blocks=4)
  directory = tmp_path_factory.mktemp('keras')
  paths = {'legacy': _save_legacy(model, str(directory / 'nasnet.h5')),
           'keras3': str(directory / 'nasnet.weights.h5')}
  model.save_weights(paths['keras3'])
  return model, logits, paths


def test_keras_layer_order_table_matches_keras(keras_mobile):
  weighted = [layer for layer in keras_mobile[0].layers if layer.weights]
  assert keras_import.layer_order('nasnet_mobile') == tuple(
      layer.name for layer in weighted)
  # The snake-case class names that key the Keras 3 layout.
  assert [keras_import.layer_class(layer.name) for layer in weighted] == [
      keras.src.utils.naming.to_snake_case(type(layer).__name__)
      for layer in weighted]


def test_keras_mobile_logits_match_from_both_layouts(keras_mobile):
  _, want, paths = keras_mobile
  legacy = keras_import.read_weights(paths['legacy'], 'nasnet_mobile')
  keras3 = keras_import.read_weights(paths['keras3'], 'nasnet_mobile')
  assert len(legacy) == 389 and legacy.keys() == keras3.keys()
  jax.tree.map(np.testing.assert_array_equal, legacy, keras3)
  converted = [convert.from_keras('nasnet_mobile', paths[layout],
                                  filters=_FILTERS, stem_filters=_STEM,
                                  **_XLA_CONVS)
               for layout in ('legacy', 'keras3')]
  (module, variables), (_, keras3_variables) = converted
  jax.tree.map(np.testing.assert_array_equal, variables, keras3_variables)
  assert (module.padding, module.num_classes) == ('keras', 10)
  images = _images(*_KERAS_SIZE, True)
  _assert_logits(module, variables, images.astype(np.float32), want,
                 _FLOAT32, 'keras mobile layout')
  with jax.enable_x64(True):
    _assert_logits(module, variables, images, want, _EXACT,
                   'keras mobile layout')


def test_keras_large_layout_logits_match_float64(tmp_path):
  model, want = _narrow_keras(skip_reduction=True, num_blocks=1)
  module, variables = convert.from_keras(
      'nasnet_large', _save_legacy(model, str(tmp_path / 'large.h5')),
      num_cells=1, filters=_FILTERS, stem_filters=_STEM, **_XLA_CONVS)
  assert (module.padding, module.skip_reduction) == ('keras', True)
  with jax.enable_x64(True):
    _assert_logits(module, variables, _images(*_KERAS_SIZE, True), want,
                   _EXACT, 'keras large layout')


def test_keras_errors_name_the_problem(keras_mobile, tmp_path):
  path = keras_mobile[2]['legacy']
  with pytest.raises(ValueError, match='Convertible models: nasnet_mobile'):
    convert.from_keras('resnet50', path)
  with pytest.raises(ValueError, match='shape of params/cell_0'):
    convert.from_keras('nasnet_mobile', path, filters=12, stem_filters=_STEM,
                       **_XLA_CONVS)
  bogus = tmp_path / 'bogus.h5'
  bogus.write_text('not hdf5')
  with pytest.raises(ValueError, match='Cannot read Keras weights'):
    convert.from_keras('nasnet_mobile', str(bogus))


def test_keras_cli_writes_a_checkpoint(tmp_path):
  # The CLI converts registered models only: a full-width NASNetMobile.
  model = _keras_model(keras.applications.NASNetMobile,
                       input_shape=(32, 32, 3), classes=10)
  weights = _save_legacy(model, str(tmp_path / 'NASNet-mobile.h5'))
  out = str(tmp_path / 'converted')
  result = subprocess.run(
      [sys.executable, '-m', 'jaxcnn.convert', '--source=keras',
       '--model=nasnet_mobile', f'--weights={weights}', f'--out={out}'],
      capture_output=True, text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr
  variables, meta = checkpoint.load_variables(out)
  want, problems = keras_import.to_flax(
      keras_import.read_weights(weights, 'nasnet_mobile'), num_cells=4)
  assert not problems
  got = traverse_util.flatten_dict(dict(variables))
  assert got.keys() == want.keys()
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert (meta['source'], meta['num_classes']) == ('keras', 10)
  assert meta['model_kwargs'] == {'padding': 'keras'}
  assert meta['preprocessing']['crop_size'] == 224


@pytest.fixture(scope='module')
def timm_large():
  """timm's NASNet-A Large layout at F = 8, float64, random weights and
  BatchNorm statistics (float32-exact), and its float64 logits."""
  torch.manual_seed(0)
  model = torch_refs.timm.models.nasnet.NASNetALarge(
      num_features=_PENULTIMATE, stem_size=_STEM, num_classes=10).eval()
  with torch.no_grad():
    model = torch_refs.randomize_batch_norm(model).double()
    # With 2 threads on 2 busy cores, torch's first call of each conv stalls
    # (28 s for this network, measured; 0.1 s on one thread).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
      logits = model(torch.from_numpy(_images(*_TIMM_SIZE, False))).numpy()
    finally:
      torch.set_num_threads(threads)
  return model, logits


def test_timm_large_layout_logits_match(timm_large):
  reference, want = timm_large
  state_dict = {k: v.float() for k, v in reference.state_dict().items()}
  module, variables = convert.from_torch('nasnet_large', state_dict,
                                         filters=_FILTERS, stem_filters=_STEM,
                                         **_XLA_CONVS)
  assert (module.padding, module.skip_reduction, module.num_classes) == (
      'timm', True, 10)
  images = _images(*_TIMM_SIZE, True)
  _assert_logits(module, variables, images.astype(np.float32), want,
                 _FLOAT32, 'timm large layout')
  with jax.enable_x64(True):
    _assert_logits(module, variables, images, want, _EXACT,
                   'timm large layout')
