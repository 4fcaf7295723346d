"""Models, the train step and the benchmarks run where TensorFlow is absent
(GPU machines with JAX and PyTorch only)."""

import subprocess
import sys


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
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
