"""jaxcnn.summary: parameter counts of the model tests, MACs counted by hand
and the published figures, and the CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxcnn import models
from jaxcnn import summary
from tests.models import test_classic
from tests.models import test_efficientnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _summary(name, size=None):
  shape = summary.default_image_shape(name)
  if size:
    shape = (size, size, shape[2])
  return summary.summarize(models.create(
      name, num_classes=summary.default_num_classes(name)), shape, name)


def test_lenet5_layers_equal_a_hand_count():
  result = _summary('lenet5')
  rows = {(layer.path, layer.output_shape, layer.params, layer.macs)
          for layer in result.layers}
  # VALID 5x5 convs: output pixels x 25 taps x C_in x C_out; dense: in x out.
  assert rows == {
      ('conv1', (1, 28, 28, 6), 156, 28 * 28 * 25 * 1 * 6),
      ('conv2', (1, 10, 10, 16), 2_416, 10 * 10 * 25 * 6 * 16),
      ('conv3', (1, 1, 1, 120), 48_120, 25 * 16 * 120),
      ('fc1', (1, 84), 10_164, 120 * 84),
      ('head', (1, 10), 850, 84 * 10)}
  assert result.params == test_classic.PARAM_COUNTS['lenet5']
  assert result.macs == 416_520
  # Without padding XLA does every tap: its MACs add the biases (1 flop
  # each), ReLUs and max pools (half a MAC per element) to these.
  for layer in result.layers:
    bias_adds = np.prod(layer.output_shape[1:])
    assert layer.xla_macs == layer.macs + bias_adds / 2
  assert 416_520 < result.xla_macs < 1.03 * 416_520


def test_xla_skips_the_taps_on_zero_padding():
  conv1 = _summary('resnet18', size=64).layers[0]
  assert (conv1.path, conv1.output_shape) == ('conv1', (1, 32, 32, 64))
  # 7x7 stride 2 pad 3 on 64 pixels: taps of each output row that fall inside.
  rows = [sum(0 <= 2 * o - 3 + k < 64 for k in range(7)) for o in range(32)]
  assert conv1.macs == 32 * 32 * 49 * 3 * 64
  assert conv1.xla_macs == sum(rows) ** 2 * 3 * 64


def test_nasnet_mobile_has_the_papers_mult_adds():
  # Zoph et al. 2018, Table 2: NASNet-A (4 @ 1056), 564 M mult-adds.
  result = _summary('nasnet_mobile')
  assert result.input_shape == (1, 224, 224, 3)
  assert result.params == 5_289_978
  assert round(result.macs / 1e6) == 564


def test_a_layer_called_with_python_arguments_is_counted():
  """NASNet's ops take `train` positionally; it must stay a Python bool."""
  model = models.create('nasnet_cifar', num_classes=10, num_cells=1,
                        filters=8)
  result = summary.summarize(model, (16, 16, 3))
  assert result.params == sum(layer.params for layer in result.layers)
  assert result.macs > 0 and result.xla_macs > 0


@pytest.mark.parametrize('name,published', [
    # torchvision's model docs, at 224: "GFLOPS" (MACs) 4.09 and 0.39.
    ('resnet50', 4.09), ('efficientnet_b0', 0.39)])
def test_published_macs_and_parameter_counts(name, published):
  result = _summary(name)
  assert result.input_shape == (1, 224, 224, 3)
  counts = {**test_classic.PARAM_COUNTS, **test_efficientnet._PARAM_COUNTS}
  assert result.params == counts[name]
  assert sum(layer.params for layer in result.layers) == result.params
  assert round(result.macs / 1e9, 2) == published
  # Measured: 3.973 G (padding skipped) and 0.410 G (BatchNorm, swish and
  # squeeze-excitation products counted).
  assert result.xla_macs / 1e9 == pytest.approx(published, rel=0.06)
  assert result.other_xla_macs > 0


def test_write_summary_and_cli_print_the_same_table(tmp_path):
  path = tmp_path / summary.SUMMARY_FILE
  written = summary.write_summary(models.create('lenet5', num_classes=10),
                                  (32, 32, 1), str(path), 'lenet5')
  text = path.read_text()
  lines = text.splitlines()
  assert lines[0] == 'lenet5: input (1, 32, 32, 1), output (1, 10), eval mode'
  assert any(line.split()[:4] == ['conv2', 'Conv', '(1,', '10,']
             for line in lines)
  assert 'parameters: 61,706' in lines
  total, = [line.split() for line in lines if line.startswith('total')]
  assert total == ['total', '(1,', '10)', '61,706', '416,520',
                   f'{written.xla_macs:,.0f}']
  assert lines[-2].startswith('MACs: 416.5 K (')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  cli = subprocess.run([sys.executable, '-m', 'jaxcnn.summary',
                        '--model=lenet5'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert cli.returncode == 0, cli.stderr[-2000:]
  assert cli.stdout == text
  with pytest.raises(ValueError, match=r'^LeNet-5 expects images of shape '
                     r'\[batch, 32, 32, 1\] \(NHWC\), got \(1, 28, 28, 1\)\.'):
    summary.summarize(models.create('lenet5'), (28, 28, 1))
