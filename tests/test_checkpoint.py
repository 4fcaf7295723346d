"""Array checksums of checkpoints, and loading verified weights."""

import glob
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import checkpoint
from jaxcnn import convert


@pytest.mark.parametrize('dtype', [np.float32, jnp.bfloat16, np.int32,
                                   np.uint8, np.bool_])
def test_any_single_flipped_bit_changes_the_checksum(dtype):
  rng = np.random.default_rng(0)
  values = rng.normal(size=(17, 5)) * 100
  array = (values > 0 if dtype == np.bool_ else values).astype(dtype)
  raw = array.view(np.uint8 if array.itemsize == 1 else
                   f'uint{8 * array.itemsize}').copy()
  original = checkpoint.array_checksums({'x': array})['x']
  assert checkpoint.array_checksums({'x': array.copy()})['x'] == original
  bits = 1 if dtype == np.bool_ else 8 * array.itemsize
  seen = set()
  for _ in range(40):
    flipped = raw.copy()
    row, col, bit = rng.integers(17), rng.integers(5), rng.integers(bits)
    flipped[row, col] ^= type(flipped[row, col])(1 << bit)
    checksum = checkpoint.array_checksums({'x': flipped.view(array.dtype)})['x']
    assert checksum != original
    seen.add(checksum)
  assert len(seen) > 30  # Different flips, different checksums.


def test_swapping_two_values_changes_the_checksum():
  array = np.arange(10, dtype=np.float32)
  swapped = array.copy()
  swapped[[2, 7]] = swapped[[7, 2]]
  sums = checkpoint.array_checksums({'a': array, 'b': swapped})
  assert sums['a'] != sums['b']


def test_verify_names_the_arrays_that_changed():
  tree = {'params': {'conv': {'kernel': np.ones((3, 3), np.float32),
                              'bias': np.zeros(3, np.float32)}}}
  expected = checkpoint.array_checksums(tree)
  assert set(expected) == {'params/conv/kernel', 'params/conv/bias'}
  checkpoint.verify(tree, expected, 'step 5')
  tree['params']['conv']['bias'][1] = 1e-30
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match=r'^step 5: checksum mismatch in params/conv/bias$'):
    checkpoint.verify(tree, expected, 'step 5')
  del expected['params/conv/kernel']
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match='no checksum for params/conv/kernel'):
    checkpoint.verify(tree, expected, 'step 5')


def test_load_variables_refuses_weights_that_changed_on_disk(tmp_path):
  variables = {'params': {'dense': {'kernel': np.arange(
      4096, dtype=np.float32).reshape(64, 64)}}, 'batch_stats': {}}
  convert.save(str(tmp_path / 'weights'), variables, {'model': 'lenet5'})
  loaded, meta = checkpoint.load_variables(str(tmp_path / 'weights'))
  np.testing.assert_array_equal(loaded['params']['dense']['kernel'],
                                variables['params']['dense']['kernel'])
  assert meta['model'] == 'lenet5'
  data = max(glob.glob(f'{tmp_path}/weights/state/ocdbt.process_0/d/*'),
             key=os.path.getsize)
  with open(data, 'r+b') as f:
    content = bytearray(f.read())
    content[len(content) // 2] ^= 0x01
    f.seek(0)
    f.write(content)
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match=f'^{tmp_path}/weights: (checksum mismatch in '
                     'params/dense/kernel|unreadable)'):
    checkpoint.load_variables(str(tmp_path / 'weights'))


@pytest.mark.parametrize('damage', [
    lambda f: f.write_bytes(f.read_bytes()[:100]), lambda f: f.unlink()],
    ids=['truncated', 'missing'])
def test_unreadable_weights_are_refused_saying_why_in_words(tmp_path, damage):
  variables = {'params': {'dense': {'kernel': np.arange(
      4096, dtype=np.float32).reshape(64, 64)}}, 'batch_stats': {}}
  convert.save(str(tmp_path / 'weights'), variables, {'model': 'lenet5'})
  data = max(glob.glob(f'{tmp_path}/weights/state/ocdbt.process_0/d/*'),
             key=os.path.getsize)
  damage(pathlib.Path(data))
  with pytest.raises(checkpoint.CorruptCheckpointError) as error:
    checkpoint.load_variables(str(tmp_path / 'weights'))
  assert str(error.value) == (
      f'{tmp_path}/weights: unreadable, a data file is missing, truncated or '
      'damaged (array params.dense.kernel)')
  assert 'TensorStore' not in str(error.value)


@pytest.mark.parametrize('dtype', [np.float32, jnp.bfloat16, np.int32,
                                   np.uint8, np.int8, np.bool_])
@pytest.mark.parametrize('shape', [(), (7,), (3, 5, 2)])
def test_host_and_device_checksums_are_equal(dtype, shape):
  # CPU arrays are summed in numpy, accelerator arrays by the jitted
  # reduction: a checkpoint saved on one verifies on the other.
  values = np.random.default_rng(1).normal(size=shape) * 1000
  array = (values > 0 if dtype == np.bool_ else values).astype(dtype)
  a, b = jax.device_get(checkpoint._device_fingerprints([array])[0])
  device = f'{int(a):08x}{int(b):08x}'
  assert checkpoint.array_checksums({'x': array})['x'] == device
  assert checkpoint.array_checksums({'x': jnp.asarray(array)})['x'] == device


def test_a_key_arrays_checksum_is_that_of_its_key_data():
  key = jax.random.key(3, impl='rbg')
  assert (checkpoint.array_checksums({'k': key})['k'] ==
          checkpoint.array_checksums({'k': jax.random.key_data(key)})['k'])
