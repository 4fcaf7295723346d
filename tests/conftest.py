"""Fixtures shared by the tests: a prepared `digits` dataset and small configs."""

import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Keras (the NASNet references) picks its backend when first imported, which
# TensorFlow's import may do before a test module could choose.
os.environ.setdefault('KERAS_BACKEND', 'jax')

import pytest  # noqa: E402

from configs import quickstart  # noqa: E402

_CACHE = 'JAX_COMPILATION_CACHE_DIR'


def pytest_configure(config) -> None:
  """One persistent XLA compilation cache for the session: its runs compile
  the same steps again and again, in this process, in the xdist workers and
  in the subprocesses they start, which all inherit the variable.

  xdist hands out whole files (`--dist loadfile`) in the order of
  `pytest_collection_modifyitems` below, not by its own test count."""
  if _CACHE not in os.environ:
    config.jaxcnn_cache = os.environ[_CACHE] = tempfile.mkdtemp(
        prefix='jaxcnn-tests-xla-cache-')
  if hasattr(config.option, 'loadscopereorder'):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  """The costliest files first (their `cost_seconds` mark), so that the
  last file a worker starts is a short one and no worker waits idle."""
  def cost(item: pytest.Item) -> float:
    mark = item.get_closest_marker('cost_seconds')
    return mark.args[0] if mark else 0.0
  items.sort(key=cost, reverse=True)  # Stable: file order otherwise kept.


def pytest_unconfigure(config) -> None:
  if hasattr(config, 'jaxcnn_cache'):
    shutil.rmtree(config.jaxcnn_cache, ignore_errors=True)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A tfds data dir with `digits` prepared once for the whole session."""
  import tensorflow as tf
  from jaxcnn.data import datasets
  tf.config.set_visible_devices([], 'GPU')
  path = str(tmp_path_factory.mktemp('tensorflow_datasets'))
  datasets.load_builder('digits', path)
  return path


@pytest.fixture
def digits_config(data_dir):
  """The quickstart recipe shrunk to a few seconds of training."""
  config = quickstart.get_config()
  config.data_dir = data_dir
  config.num_epochs = 1.0
  config.warmup_epochs = 0.0
  config.log_every_steps = 5
  config.progress_bar = False
  return config


@pytest.fixture(scope='session')
def detection_data_dir(data_dir) -> str:
  """The session's data dir with `digits_detection` prepared too."""
  from jaxcnn.data import datasets
  datasets.load_builder('digits_detection', data_dir)
  return data_dir
