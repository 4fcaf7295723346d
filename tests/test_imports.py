"""Models, the train step and the benchmarks run where TensorFlow is absent
(GPU machines with JAX and PyTorch only); the input pipeline and the metric
writer start without Keras and PyTorch (jaxcnn.imports)."""

import subprocess
import sys

import pytest

from jaxcnn import imports


def _run_python(code):
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def test_models_train_step_and_benchmarks_do_not_import_tensorflow():
  code = ('import sys\n'
          'import jaxcnn.models, jaxcnn.step, jaxcnn.optim, jaxcnn.state, '
          'jaxcnn.sharding, jaxcnn.checkpoint, jaxcnn.metrics, '
          'jaxcnn.kernels.depthwise_conv\n'
          'import benchmarks.train_throughput, benchmarks.profile_step, '
          'benchmarks.depthwise_layers\n'
          'loaded = [m for m in ("tensorflow", "tensorflow_datasets") '
          'if m in sys.modules]\n'
          'assert not loaded, loaded\n')
  _run_python(code)


@pytest.fixture
def host_of_an_extra(tmp_path, monkeypatch):
  """Module `host` records whether its optional import of `extra` worked."""
  (tmp_path / 'jaxcnn_test_host.py').write_text(
      'try:\n  import jaxcnn_test_extra\n  HAS_EXTRA = True\n'
      'except ImportError:\n  HAS_EXTRA = False\n')
  (tmp_path / 'jaxcnn_test_extra.py').write_text('VALUE = 7\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  yield 'jaxcnn_test_host', 'jaxcnn_test_extra'
  for name in ('jaxcnn_test_host', 'jaxcnn_test_extra'):
    sys.modules.pop(name, None)


def test_import_without_hides_the_unused_package_during_the_import_only(
    host_of_an_extra):
  host, extra = host_of_an_extra
  assert imports.import_without(host, extra).HAS_EXTRA is False
  assert extra not in sys.modules
  assert __import__(extra).VALUE == 7


def test_import_without_hides_nothing_already_imported(host_of_an_extra):
  host, extra = host_of_an_extra
  __import__(extra)
  assert imports.import_without(host, extra).HAS_EXTRA is True


def test_the_input_pipeline_and_metric_writer_start_without_keras_and_torch():
  out = _run_python(
      'import sys\n'
      'from jaxcnn.data import stream\n'
      'from jaxcnn import metrics\n'
      'print(sorted(m for m in ("tensorflow", "tensorboardX", "keras", '
      '"torch") if m in sys.modules))\n'
      'import keras, torch\n'
      'print(stream.tf.keras.layers.Dense is keras.layers.Dense, '
      'torch.ones(2).sum().item())\n')
  assert out.splitlines() == ["['tensorboardX', 'tensorflow']", 'True 2.0']
