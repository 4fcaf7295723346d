"""summary, cam, export, plot, predict (of .npy batches and image files) and
evaluate on labelled files run where TensorFlow is not installed: a
subprocess whose imports of tensorflow and tensorflow_datasets fail."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
from PIL import Image
import pytest

from jaxcnn import convert
from jaxcnn import evaluate
from jaxcnn import models
from jaxcnn import predict
from tests import test_export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = textwrap.dedent('''\
    import sys

    # What an absent package looks like to `import` (ImportError) and to
    # importlib.util.find_spec (None), which libraries such as etils ask.
    for name in ('tensorflow', 'tensorflow_datasets'):
      sys.modules[name] = None
    ''')


def _run(code, *args):
  result = subprocess.run(
      [sys.executable, '-c', BLOCK + textwrap.dedent(code), *args], cwd=ROOT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_summary_cam_export_and_plot_run_without_tensorflow(tmp_path):
  out = _run('''
      import json
      import numpy as np
      from jaxcnn import cam, export, models, plot, summary
      from tests import test_export
      model = models.create('lenet5', num_classes=10)
      table = summary.summarize(model, (32, 32, 1), 'lenet5')
      variables = test_export.random_variables(model, (32, 32, 1))
      images = np.random.default_rng(0).normal(
          size=(3, 32, 32, 1)).astype(np.float32)
      maps = cam.class_maps(model, variables, images)[0]
      path = sys.argv[1] + '/lenet5.export'
      export.save(export.export(model, variables, (32, 32, 1)), path, {})
      logits = export.load(path).call(images)
      fig = plot.write({'run': [{'step': 1, 'train/loss': 2.0}]},
                       sys.argv[1] + '/curves.png')
      print(json.dumps({
          'params': table.params, 'macs': table.macs,
          'maps': list(maps.shape),
          'error': float(np.abs(np.asarray(logits) - np.asarray(
              model.apply(variables, images))).max()),
          'lines': len(fig.axes[0].lines),
          'tensorflow': [m for m, module in sys.modules.items()
                         if module is not None and m.split('.')[0] in (
                             'tensorflow', 'tensorflow_datasets')]}))
      ''', str(tmp_path))
  assert json.loads(out.splitlines()[-1]) == {
      'params': 61_706, 'macs': 416_520, 'maps': [3, 10, 10],
      'error': pytest.approx(0, abs=1e-5), 'lines': 1, 'tensorflow': []}
  table = _run('''
      import runpy
      sys.argv = ['summary', '--model=squeezenet1_1', '--image_size=64']
      runpy.run_module('jaxcnn.summary', run_name='__main__')
      ''')
  assert 'parameters: 1,235,496' in table.splitlines()


def test_predict_loads_a_checkpoint_and_predicts_npy_without_tensorflow(
    tmp_path):
  # A converted checkpoint (no run config) of LeNet-5 with random weights.
  out = _run('''
      import json
      import runpy
      import numpy as np
      from jaxcnn import convert, models, predict
      from tests import test_export
      root = sys.argv[1]
      model = models.create('lenet5', num_classes=10)
      variables = test_export.random_variables(model, (32, 32, 1))
      convert.save(root + '/weights', variables, {
          'task': 'classification', 'model': 'lenet5', 'num_classes': 10,
          'preprocessing': {}})
      images = np.random.default_rng(0).normal(
          size=(2, 32, 32, 1)).astype(np.float32)
      np.save(root + '/batch.npy', images)
      [first, second] = predict.run(root + '/weights',
                                    [root + '/batch.npy'], top=1)
      want = np.asarray(model.apply(variables, images)).argmax(-1).tolist()
      sys.argv = ['predict.py', f'--checkpoint={root}/weights',
                  '--top_k=1', f'--output={root}/cli.jsonl',
                  f'{root}/batch.npy']
      try:
        runpy.run_path('predict.py', run_name='__main__')
      except SystemExit as e:
        assert not e.code, e.code
      with open(root + '/cli.jsonl') as f:
        cli = [json.loads(line)['classes'][0] for line in f]
      print(json.dumps({
          'classes': [first.classes[0], second.classes[0]], 'want': want,
          'cli': cli,
          'tensorflow': [m for m, module in sys.modules.items()
                         if module is not None and m.split('.')[0] in (
                             'tensorflow', 'tensorflow_datasets')]}))
      ''', str(tmp_path))
  result = json.loads(out.splitlines()[-1])
  assert result['classes'] == result['want'] == result['cli']
  assert result['tensorflow'] == []


def test_predict_preprocesses_an_image_file_without_tensorflow_as_with_it(
    tmp_path):
  model = models.create('lenet5', num_classes=10)
  convert.save(str(tmp_path / 'weights'), test_export.random_variables(
      model, (32, 32, 1)), {
          'task': 'classification', 'model': 'lenet5', 'num_classes': 10,
          'preprocessing': {'crop_size': 32, 'resize_size': 37,
                            'interpolation': 'bicubic', 'mean': [0.45],
                            'std': [0.22]}})
  pixels = np.random.default_rng(0).integers(0, 256, (45, 61, 3), np.uint8)
  Image.fromarray(pixels).save(tmp_path / 'digit.png')
  with_tf = predict.load(str(tmp_path / 'weights')).load_image(
      str(tmp_path / 'digit.png'))
  out = _run('''
      import json
      from jaxcnn import predict
      image = predict.load(sys.argv[1] + '/weights').load_image(
          sys.argv[1] + '/digit.png')
      print(json.dumps({'image': image.tolist(), 'tensorflow': [
          m for m, module in sys.modules.items()
          if module is not None and m.split('.')[0] == 'tensorflow']}))
      ''', str(tmp_path))
  result = json.loads(out.splitlines()[-1])
  assert result['tensorflow'] == []
  assert with_tf.shape == (32, 32, 1)
  # 2e-4 of 255 at most, divided by the std (0.22 x 255).
  np.testing.assert_allclose(result['image'], with_tf, rtol=0, atol=4e-6)


def write_digit_pngs(data_dir: str, root: str) -> str:
  """The 360 `digits` test images as PNG files, ROOT/<label>/<index>.png."""
  import tensorflow_datasets as tfds
  from jaxcnn.data import datasets
  split = datasets.load_builder('digits', data_dir).as_dataset(split='test')
  for index, example in enumerate(tfds.as_numpy(split)):
    folder = os.path.join(root, str(example['label']))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(example['image'][..., 0]).save(
        os.path.join(folder, f'{index:03d}.png'))
  return root


def test_evaluate_scores_labelled_files_without_tensorflow_as_the_split(
    data_dir, tmp_path):
  # Converted LeNet-5 weights with the quickstart's preprocessing (digits
  # are 32x32: no resize), scored on the split here, with TensorFlow.
  model = models.create('lenet5', num_classes=10)
  weights = str(tmp_path / 'weights')
  convert.save(weights, test_export.random_variables(model, (32, 32, 1)), {
      'task': 'classification', 'model': 'lenet5', 'num_classes': 10,
      'preprocessing': {'crop_size': 32, 'resize_size': 32,
                        'interpolation': 'bilinear', 'mean': [78 / 255],
                        'std': [106 / 255]}})
  want = evaluate.run(weights, str(tmp_path / 'split'), dataset='digits',
                      data_dir=data_dir)
  pngs = write_digit_pngs(data_dir, str(tmp_path / 'pngs'))
  out = _run('''
      import json
      import os
      import runpy
      root, weights, pngs = sys.argv[1:]

      def cli(*flags):
        sys.argv = ['evaluate.py', f'--checkpoint={weights}', *flags]
        try:
          runpy.run_path('evaluate.py', run_name='__main__')
        except SystemExit as e:
          return e.code
      exits = [cli(f'--files={pngs}', f'--output={root}/files',
                   '--batch_size=100'),
               cli(f'--files={root}/nowhere', f'--output={root}/bad')]
      with open(f'{root}/files/report.json') as f:
        report = json.load(f)
      print(json.dumps({
          'report': report, 'exits': exits, 'outputs': sorted(os.listdir(root)),
          'tensorflow': [m for m, module in sys.modules.items()
                         if module is not None and m.split('.')[0] in (
                             'tensorflow', 'tensorflow_datasets')]}))
      ''', str(tmp_path), weights, pngs)
  result = json.loads(out.splitlines()[-1])
  assert result['tensorflow'] == []
  assert result['exits'] == [
      None, f'FATAL --files={tmp_path}/nowhere: does not exist.']
  assert result['outputs'] == ['files', 'pngs', 'split', 'weights']
  got = result['report']
  assert got['examples'] == 360 and got['files'] == pngs
  assert got['confusion_matrix'] == want['confusion_matrix']
  assert (got['accuracy'], got['top5']) == (want['accuracy'], want['top5'])
  assert got['loss'] == pytest.approx(want['loss'], rel=1e-6)


def test_the_convert_cli_converts_torch_weights_without_tensorflow(tmp_path):
  """`python -m jaxcnn.convert` on a torchvision state_dict (written here,
  where torchvision loads) with TensorFlow's import blocked: the variables
  of `convert.from_torch` in this process."""
  import torch
  from tests import torch_refs
  reference = torch_refs.torchvision.models.squeezenet1_1()
  torch.save(reference.state_dict(), tmp_path / 'squeezenet.pth')
  result = subprocess.run(
      [sys.executable, '-c', BLOCK + textwrap.dedent('''
          import runpy
          runpy.run_module('jaxcnn.convert', run_name='__main__')
          '''), '--model=squeezenet1_1',
       f'--weights={tmp_path}/squeezenet.pth', f'--out={tmp_path}/out'],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == (
      f'Wrote squeezenet1_1 (torchvision, 1000 classes) to {tmp_path}/out.')
  _, expected = convert.from_torch('squeezenet1_1', reference.state_dict())
  written = predict.load(str(tmp_path / 'out')).variables
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(written),
               expected)
