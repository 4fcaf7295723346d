"""evaluate.py: the run's evaluation per class, equal to scikit-learn's on
independently computed predictions, and the compression study."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest
from sklearn import metrics as sk_metrics
import tensorflow_datasets as tfds

from configs import quickstart
from jaxcnn import checkpoint
from jaxcnn import compress
from jaxcnn import convert
from jaxcnn import evaluate
from jaxcnn import labelled_files
from jaxcnn import metrics as metrics_lib
from jaxcnn import models
from jaxcnn import trainer
from jaxcnn.data import classification
from jaxcnn.data import datasets
from tests import test_no_tensorflow

pytestmark = pytest.mark.cost_seconds(80)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """A short quickstart run with EMA, its 360 eval digits in batches of 128
  (the last one padded): (workdir, config, final eval metrics)."""
  config = quickstart.get_config()
  config.update(dict(data_dir=data_dir, num_steps=30, warmup_epochs=0.0,
                     ema_decay=0.9, progress_bar=False))
  workdir = str(tmp_path_factory.mktemp('evaluate_run'))
  return workdir, config, trainer.train_and_evaluate(config, workdir)


@pytest.fixture(scope='module')
def eval_set(trained):
  """The eval images and labels as the pipeline gives them, padding dropped."""
  data = classification.create(trained[1], model_channels=1)
  batches = list(data.eval_batches())
  real = np.concatenate([b['mask'] for b in batches]) > 0
  return (np.concatenate([b['image'] for b in batches])[real],
          np.concatenate([b['label'] for b in batches])[real])


@pytest.fixture(scope='module')
def report(trained, tmp_path_factory):
  output = str(tmp_path_factory.mktemp('report'))
  return output, evaluate.run(trained[0], output)


@pytest.fixture(scope='module')
def digit_pngs(data_dir, tmp_path_factory):
  """The 360 test digits as PNG files in class folders, DIR/<label>/."""
  return test_no_tensorflow.write_digit_pngs(
      data_dir, str(tmp_path_factory.mktemp('digit_pngs')))


def _without_source(report):
  """The report but what was evaluated and the loss (a float sum, in
  another order over files)."""
  return {k: v for k, v in report.items()
          if k not in ('dataset', 'split', 'files', 'labels', 'loss')}


def _logits(variables, images):
  """LeNet-5's logits, computed without evaluate."""
  model = models.create('lenet5', num_classes=10)
  return np.asarray(model.apply(variables, images, train=False))


def _predictions(variables, images):
  return _logits(variables, images).argmax(-1)


def test_accuracy_is_the_runs_final_eval_and_scores_are_sklearns(
    trained, eval_set, report):
  workdir, _, results = trained
  _, got = report
  last = metrics_lib.read_metrics(workdir)[-1]
  assert last['step'] == got['step'] == 30
  assert got['accuracy'] == last['eval/accuracy'] == results['eval/accuracy']
  assert got['top5'] == last['eval/top5']
  assert got['loss'] == pytest.approx(last['eval/loss'], rel=1e-6)
  assert got['examples'] == 360 and got['split'] == 'test'
  assert 0.3 < got['accuracy'] < 0.99  # Errors to count per class.

  images, labels = eval_set
  predicted = _predictions(checkpoint.load_variables(workdir)[0], images)
  np.testing.assert_array_equal(
      got['confusion_matrix'],
      sk_metrics.confusion_matrix(labels, predicted, labels=range(10)))
  assert got['accuracy'] == pytest.approx(np.mean(predicted == labels),
                                          abs=1e-7)
  want = sk_metrics.classification_report(labels, predicted, output_dict=True,
                                          zero_division=0)
  assert [c['name'] for c in got['per_class']] == [str(i) for i in range(10)]
  for i, scores in enumerate(got['per_class']):
    assert scores == {'name': str(i), 'support': want[str(i)]['support'],
                      **{k: pytest.approx(want[str(i)][v], abs=1e-12)
                         for k, v in (('precision', 'precision'),
                                      ('recall', 'recall'),
                                      ('f1', 'f1-score'))}}
  for ours, theirs in (('macro_avg', 'macro avg'),
                       ('weighted_avg', 'weighted avg')):
    assert got[ours] == {
        'precision': pytest.approx(want[theirs]['precision'], abs=1e-12),
        'recall': pytest.approx(want[theirs]['recall'], abs=1e-12),
        'f1': pytest.approx(want[theirs]['f1-score'], abs=1e-12),
        'support': 360}


def test_writes_json_markdown_and_picture(trained, report):
  output, got = report
  assert sorted(os.listdir(output)) == sorted(evaluate.OUTPUTS)
  with open(os.path.join(output, 'report.json')) as f:
    assert json.load(f) == got
  with open(os.path.join(output, 'report.md')) as f:
    markdown = f.read()
  lines = markdown.splitlines()
  assert lines[0] == '# lenet5 on digits `test`'
  first = got['per_class'][0]
  assert (f'| 0 | {first["precision"]:.4f} | {first["recall"]:.4f} | '
          f'{first["f1"]:.4f} | {first["support"]} |') in lines
  assert sum(line.startswith('| ') for line in lines) == 1 + 10 + 2
  assert f'accuracy {got["accuracy"]:.4f}' in lines[2]
  with Image.open(os.path.join(output, 'confusion_matrix.png')) as png:
    assert min(png.size) > 300

  # An earlier report is replaced only with --overwrite.
  with pytest.raises(FileExistsError, match='pass --overwrite'):
    evaluate.run(trained[0], output)
  evaluate.check_output(output, overwrite=True)
  assert sorted(os.listdir(output)) == sorted(evaluate.OUTPUTS)


def test_two_devices_and_padding_count_every_example_once_ema_too(
    trained, eval_set, tmp_path):
  # 360 = 25 x 14 + 10: the last batch has 4 padding rows, and every batch
  # is split over two devices (the CLI, in a process with two).
  code = textwrap.dedent('''
      import runpy
      import sys
      import jax
      assert jax.device_count() == 2, jax.devices()
      sys.argv = ['evaluate.py', *sys.argv[1:]]
      runpy.run_path('evaluate.py', run_name='__main__')
      ''')
  result = subprocess.run(
      [sys.executable, '-c', code, f'--checkpoint={trained[0]}',
       f'--output={tmp_path}', '--batch_size=14', '--use_ema'], cwd=ROOT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
               XLA_FLAGS='--xla_force_host_platform_device_count=2'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'report.json') as f:
    got = json.load(f)
  results = trained[2]
  assert got['use_ema']
  assert got['accuracy'] == results['eval_ema/accuracy']
  assert got['loss'] == pytest.approx(results['eval_ema/loss'], rel=1e-6)
  assert abs(results['eval_ema/loss'] - results['eval/loss']) > 1e-3
  images, labels = eval_set
  predicted = _predictions(
      checkpoint.load_variables(trained[0], use_ema=True)[0], images)
  np.testing.assert_array_equal(
      got['confusion_matrix'],
      sk_metrics.confusion_matrix(labels, predicted, labels=range(10)))
  assert result.stdout.startswith('# lenet5 on digits `test`')


def test_a_split_slice_is_evaluated_whole(trained, data_dir, tmp_path):
  got = evaluate.run(trained[0], str(tmp_path), split='train[:50]')
  assert got['split'] == 'train[:50]' and got['examples'] == 50
  labels = [example['label'] for example in tfds.as_numpy(
      datasets.load_builder('digits', data_dir).as_dataset(
          split='train[:50]'))]
  assert np.sum(got['confusion_matrix'], axis=1).tolist() == np.bincount(
      labels, minlength=10).tolist()


def test_converted_weights_are_evaluated_on_the_named_dataset(
    trained, data_dir, report, tmp_path):
  variables = checkpoint.load_variables(trained[0])[0]
  weights = str(tmp_path / 'converted')
  convert.save(weights, variables, {
      'task': 'classification', 'model': 'lenet5', 'num_classes': 10,
      'preprocessing': {'crop_size': 32, 'resize_size': 32,
                        'interpolation': 'bilinear', 'mean': [78 / 255],
                        'std': [106 / 255]}})
  with pytest.raises(ValueError, match=r'^--checkpoint=.*pass --dataset=NAME'):
    evaluate.run(weights, str(tmp_path / 'none'))
  got = evaluate.run(weights, str(tmp_path / 'report'), dataset='digits',
                     data_dir=data_dir)
  assert got['confusion_matrix'] == report[1]['confusion_matrix']
  assert got['accuracy'] == report[1]['accuracy']
  assert got['step'] is None and got['dataset'] == 'digits'

  # A head of 5 classes cannot be scored on 10.
  five = str(tmp_path / 'five')
  head = {'kernel': variables['params']['head']['kernel'][:, :5],
          'bias': variables['params']['head']['bias'][:5]}
  convert.save(five, {**variables,
                      'params': {**variables['params'], 'head': head}}, {
      **checkpoint.load_meta(weights), 'num_classes': 5})
  with pytest.raises(ValueError, match='^--dataset=digits has 10 classes; '
                     'the model predicts 5.$'):
    evaluate.run(five, str(tmp_path / 'five_report'), dataset='digits',
                 data_dir=data_dir)


def test_compression_study_reports_accuracy_size_and_change(
    trained, eval_set, report, tmp_path, capsys):
  got = evaluate.run(trained[0], str(tmp_path), quantize='int8', prune=0.5)
  printed = capsys.readouterr().out
  with open(tmp_path / 'report.json') as f:
    assert json.load(f) == got
  study = got['compression']
  assert study['method'] == 'prune 0.5 + int8'
  # The float model is the plain report's; LeNet-5's 61,706 float32 values.
  assert study['float'] == {'accuracy': report[1]['accuracy'],
                            'top5': report[1]['top5'],
                            'size_bytes': 61_706 * 4}
  # Half of the 61,470 kernel weights zeroed; the 236 biases stay float32.
  images, labels = eval_set
  compressed = compress.compress(checkpoint.load_variables(trained[0])[0],
                                 'int8', 0.5)
  kept = sum(np.count_nonzero(compress.quantize_int8(
      compressed.variables['params'][layer]['kernel'])[0])
             for layer in ('conv1', 'conv2', 'conv3', 'fc1', 'head'))
  masks = sum(-(-n // 8) for n in (150, 2400, 48_000, 10_080, 840))
  scales = 4 * (6 + 16 + 120 + 84 + 10)
  size = kept + masks + scales + 4 * 236
  logits = _logits(compressed.variables, images)
  predicted = logits.argmax(-1)
  top5 = np.any(np.argsort(-logits, -1)[:, :5] == labels[:, None], -1)
  assert study['compressed'] == {
      'accuracy': pytest.approx(np.mean(predicted == labels), abs=1e-7),
      'top5': pytest.approx(np.mean(top5), abs=1e-7), 'size_bytes': size,
      'zeroed_kernel_weights': 30_735, 'kernel_weights': 61_470}
  assert study['change'] == {
      'accuracy': pytest.approx(study['compressed']['accuracy'] -
                                report[1]['accuracy']),
      'top5': pytest.approx(study['compressed']['top5'] - report[1]['top5']),
      'size_ratio': pytest.approx(size / (61_706 * 4))}
  # The per-class report is the compressed model's.
  np.testing.assert_array_equal(
      got['confusion_matrix'],
      sk_metrics.confusion_matrix(labels, predicted, labels=range(10)))
  with open(tmp_path / 'report.md') as f:
    assert printed.strip() == f.read().strip()
  assert '## Compression' in printed
  assert f'| float | {report[1]["accuracy"]:.4f} |' in printed


def test_bad_inputs_name_the_flag_and_change_nothing(trained, tmp_path):
  workdir = trained[0]
  busy = tmp_path / 'busy'
  busy.mkdir()
  (busy / 'notes.txt').write_text('mine')
  cases = [
      (dict(checkpoint_path=str(tmp_path / 'nowhere')),
       f'--checkpoint={tmp_path}/nowhere: No checkpoint at'),
      (dict(split='validation'), "--split=validation: Unknown split "
       r"'validation'. Should be one of \['train', 'test'\]."),
      (dict(split='train[:0]'), r'--split=train\[:0\]: holds no examples.'),
      (dict(prune=1.0), r'--prune=1.0: must be in \[0, 1\).'),
      (dict(prune=-0.1), r'--prune=-0.1: must be in \[0, 1\).'),
      (dict(quantize='int4'), '--quantize=int4: must be one of int8.'),
      (dict(output=str(busy)), f'--output={busy}: holds other files '
       r'\(notes.txt\); pass a new or empty directory.'),
      (dict(dataset='svhn'), "--dataset=svhn: Unknown dataset 'svhn'"),
  ]
  for options, message in cases:
    options = {'checkpoint_path': workdir, 'output': str(tmp_path / 'out'),
               **options}
    with pytest.raises((ValueError, OSError), match='^' + message) as error:
      evaluate.run(**options)
    assert '\n' not in str(error.value)
  assert sorted(os.listdir(tmp_path)) == ['busy']
  assert os.listdir(busy) == ['notes.txt']


def test_report_compression_and_cli_errors_need_no_tensorflow(tmp_path):
  busy = tmp_path / 'busy'
  busy.mkdir()
  (busy / 'notes.txt').write_text('mine')
  code = test_no_tensorflow.BLOCK + textwrap.dedent('''
      import json
      import os
      import runpy
      import numpy as np
      from jaxcnn import compress, evaluate
      report_dir, busy = sys.argv[1:]
      confusion = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 0]])
      report = {'checkpoint': 'c', 'model': 'm', 'step': 1, 'use_ema': False,
                'dataset': 'd', 'split': 's', 'examples': 7,
                'accuracy': 5 / 7, 'top5': 1.0, 'loss': 0.5,
                **evaluate.class_scores(confusion, ['a', 'b', 'c']),
                'confusion_matrix': confusion.tolist()}
      evaluate.write_report(report_dir, report)
      kernel = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
      size = compress.compress({'params': {'kernel': kernel}}, 'int8',
                               0.5).size_bytes
      sys.argv = ['evaluate.py', '--checkpoint=nowhere',
                  f'--output={busy}']
      try:
        runpy.run_path('evaluate.py', run_name='__main__')
      except SystemExit as e:
        exit_message = e.code
      print(json.dumps({
          'recall': [c['recall'] for c in report['per_class']],
          'files': sorted(os.listdir(report_dir)), 'size': size,
          'exit': exit_message,
          'tensorflow': [m for m, module in sys.modules.items()
                         if module is not None and m.split('.')[0] in (
                             'tensorflow', 'tensorflow_datasets')]}))
      ''')
  result = subprocess.run(
      [sys.executable, '-c', code, str(tmp_path / 'report'), str(busy)],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # 6 of 12 weights kept (int8), a 2-byte mask, 4 float32 scales; the CLI's
  # exit (code 1 with this line on stderr) leaves the directory as it was.
  assert json.loads(result.stdout.splitlines()[-1]) == {
      'recall': [0.75, 1.0, 0.0], 'files': sorted(evaluate.OUTPUTS),
      'size': 6 + 2 + 16, 'tensorflow': [],
      'exit': f'FATAL --output={busy}: holds other files (notes.txt); pass '
              'a new or empty directory.'}
  assert os.listdir(busy) == ['notes.txt']


def test_image_files_in_class_folders_give_the_split_report(
    trained, report, digit_pngs, tmp_path):
  got = evaluate.run(trained[0], str(tmp_path), files=digit_pngs)
  assert got['files'] == digit_pngs and got['labels'] is None
  assert got['dataset'] is None and got['split'] is None
  # PNG is lossless and the preprocessing the pipeline's: the same
  # confusion matrix, accuracy, top-5 and per-class scores.
  assert _without_source(got) == _without_source(report[1])
  assert got['loss'] == pytest.approx(report[1]['loss'], rel=1e-6)
  with open(tmp_path / 'report.md') as f:
    assert f.readline() == f'# lenet5 on `{digit_pngs}`\n'
  assert sorted(os.listdir(tmp_path)) == sorted(evaluate.OUTPUTS)


def test_a_npy_batch_and_its_labels_give_the_split_report(
    trained, report, eval_set, tmp_path):
  # The pipeline's preprocessed images; 360 = 25 x 14 + 10, so the last
  # batch has 4 padding rows.
  images, labels = eval_set
  np.save(tmp_path / 'images.npy', images)
  np.save(tmp_path / 'labels.npy', labels.astype(np.int64))
  got = evaluate.run(trained[0], str(tmp_path / 'report'),
                     files=str(tmp_path / 'images.npy'),
                     labels=str(tmp_path / 'labels.npy'), batch_size=14)
  assert _without_source(got) == _without_source(report[1])
  assert got['labels'] == str(tmp_path / 'labels.npy')


def test_classes_without_a_folder_have_support_zero(
    trained, report, digit_pngs, tmp_path):
  for name in ('3', '7'):
    shutil.copytree(os.path.join(digit_pngs, name), tmp_path / 'two' / name)
  got = evaluate.run(trained[0], str(tmp_path / 'report'),
                     files=str(tmp_path / 'two'), batch_size=16)
  full = np.asarray(report[1]['confusion_matrix'])
  want = np.zeros_like(full)
  want[[3, 7]] = full[[3, 7]]
  np.testing.assert_array_equal(got['confusion_matrix'], want)
  assert [c['support'] for c in got['per_class']] == [
      int(want[i].sum()) for i in range(10)]
  assert got['examples'] == len(os.listdir(digit_pngs + '/3')) + len(
      os.listdir(digit_pngs + '/7'))


def test_each_process_reads_its_rows_of_every_padded_batch():
  # 13 examples in global batches of 8 over 2 processes: 4 rows each, the
  # second batch 3 short.
  examples = labelled_files.Examples(
      np.arange(13, dtype=np.int32) % 5, (1,),
      lambda indices: indices[:, None].astype(np.float32))
  parts = [list(labelled_files.eval_batches(examples, 8, p, 2))
           for p in (0, 1)]
  assert [[b['mask'].tolist() for b in part] for part in parts] == [
      [[1, 1, 1, 1], [1, 1, 1, 1]], [[1, 1, 1, 1], [1, 0, 0, 0]]]
  rows = [b['image'][b['mask'] > 0, 0] for part in parts for b in part]
  assert sorted(np.concatenate(rows).tolist()) == list(range(13))
  assert [b['label'].tolist() for b in parts[1]] == [
      [4, 0, 1, 2], [2, 0, 0, 0]]


def test_bad_files_name_the_flag_and_write_nothing(trained, eval_set,
                                                   digit_pngs, tmp_path):
  images, labels = eval_set
  inputs = tmp_path / 'inputs'
  shutil.copytree(os.path.join(digit_pngs, '3'), inputs / 'cats' / '3')
  shutil.copytree(os.path.join(digit_pngs, '3'), inputs / 'cats' / 'cat')
  (inputs / 'empty' / '3').mkdir(parents=True)
  (inputs / 'empty' / '3' / 'notes.txt').write_text('no image')
  np.save(inputs / 'images.npy', images[:5])
  np.save(inputs / 'four.npy', labels[:4])
  np.save(inputs / 'eleven.npy', np.array([0, 1, 10, 2, 3]))
  np.save(inputs / 'floats.npy', np.zeros(5))
  npy = str(inputs / 'images.npy')
  cases = [
      (dict(files=str(inputs / 'cats')), f'--files={inputs}/cats: class '
       r"folder 'cat' is not a class of the checkpoint \(0, 1, 2, 3, 4, 5, "
       r'6, 7, 8, 9\); rename or remove it.'),
      (dict(files=str(inputs / 'empty')), f'--files={inputs}/empty: holds '
       f'no images in class folders \\({inputs}/empty/<class name>/'),
      (dict(files=npy, labels=str(inputs / 'four.npy')),
       f'--labels={inputs}/four.npy: holds 4 labels for the 5 images of '
       f'{npy}; pass one per image.'),
      (dict(files=npy, labels=str(inputs / 'eleven.npy')),
       f'--labels={inputs}/eleven.npy: label 10 \\(image 2\\) is not a '
       r'class of the checkpoint, which has 10 \(0 to 9\).'),
      (dict(files=npy, labels=str(inputs / 'floats.npy')),
       f'--labels={inputs}/floats.npy: holds float64 values of shape '
       r'\(5,\); expected \[N\] integer class indices.'),
      (dict(files=npy), f'--files={npy}: pass --labels=LABELS.npy'),
      (dict(files=str(inputs / 'four.npy'), labels=str(inputs / 'four.npy')),
       f'--files={inputs}/four.npy: holds int(32|64) values; expected a '
       'preprocessed float batch.'),
      (dict(files=str(inputs / 'nowhere')),
       f'--files={inputs}/nowhere: does not exist.'),
      (dict(files=str(inputs / 'cats'), labels=str(inputs / 'four.npy')),
       f'--labels={inputs}/four.npy: a folder\'s labels are its class '
       'folders'),
      (dict(labels=str(inputs / 'four.npy')),
       f'--labels={inputs}/four.npy: labels a .npy batch; pass it as '
       '--files=IMAGES.npy too.'),
      (dict(files=npy, split='test'), '--split=test: chooses a dataset '
       f'split, but --files={npy} are evaluated instead; pass one of them.'),
  ]
  for options, message in cases:
    with pytest.raises(ValueError, match='^' + message) as error:
      evaluate.run(trained[0], str(tmp_path / 'out'), **options)
    assert '\n' not in str(error.value)
  assert sorted(os.listdir(tmp_path)) == ['inputs']


def test_a_run_saved_before_fields_were_added_is_evaluated(
    data_dir, eval_set, tmp_path):
  """A quickstart workdir written before `task`, `mixup_alpha`, ... existed
  (tests/test_trainer.py): those fields take the values that reproduce it
  (workdir.ADDED_FIELDS)."""
  old = str(tmp_path / 'old')
  shutil.copytree(os.path.join(ROOT, 'tests', 'fixtures',
                               'workdir_before_task_seam'), old)
  got = evaluate.run(old, str(tmp_path / 'report'), data_dir=data_dir)
  images, labels = eval_set
  predicted = _predictions(checkpoint.load_variables(old)[0], images)
  assert got['step'] == 5 and got['examples'] == 360
  np.testing.assert_array_equal(
      got['confusion_matrix'],
      sk_metrics.confusion_matrix(labels, predicted, labels=range(10)))
