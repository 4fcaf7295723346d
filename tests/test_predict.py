"""predict.py: predictions equal evaluation's, and one-line errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import quickstart
from jaxcnn import checkpoint
from jaxcnn import convert
from jaxcnn import models
from jaxcnn import predict
from jaxcnn import tasks
from jaxcnn import trainer
from jaxcnn.data import classification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """A short quickstart run with EMA: (workdir, config, final eval metrics)."""
  config = quickstart.get_config()
  config.update(dict(data_dir=data_dir, num_steps=30, warmup_epochs=0.0,
                     ema_decay=0.9, progress_bar=False))
  workdir = str(tmp_path_factory.mktemp('predict_run'))
  return workdir, config, trainer.train_and_evaluate(config, workdir)


@pytest.fixture(scope='module')
def digits_pngs(trained, tmp_path_factory):
  """Every digits eval image as a PNG file, in eval order, with the eval
  pipeline's preprocessed images and labels."""
  _, config, _ = trained
  data = classification.create(config, model_channels=1)
  batches = list(data.eval_batches())
  mask = np.concatenate([b['mask'] for b in batches]) > 0
  images = np.concatenate([b['image'] for b in batches])[mask]
  labels = np.concatenate([b['label'] for b in batches])[mask]
  directory = tmp_path_factory.mktemp('pngs')
  paths = []
  raw = tfds.as_numpy(data.builder.as_dataset(split=data.local_eval_split,
                                              shuffle_files=False))
  for i, example in enumerate(raw):
    paths.append(str(directory / f'{i:03d}.png'))
    Image.fromarray(example['image'][..., 0]).save(paths[-1])
  return paths, images, labels


@pytest.fixture(scope='module')
def predictor(trained):
  return predict.load(trained[0])


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """A squeezenet1_1 checkpoint as `jaxcnn.convert` writes it (random
  weights, 10 classes, torchvision's preprocessing)."""
  model = models.create('squeezenet1_1', num_classes=10)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          np.zeros((1, 64, 64, 3)))
  rng = np.random.default_rng(0)  # No init to compile: seconds on a CPU.
  variables = jax.tree.map(
      lambda s: rng.normal(0.0, 0.05, s.shape).astype(np.float32), shapes)
  path = str(tmp_path_factory.mktemp('converted') / 'squeezenet')
  convert.save(path, dict(variables, batch_stats={}), {
      'model': 'squeezenet1_1', 'source': 'torchvision', 'num_classes': 10,
      'model_kwargs': convert.model_kwargs('squeezenet1_1', 'torchvision'),
      'preprocessing': convert.preprocessing('squeezenet1_1', 'torchvision')})
  return path


def _loss_and_accuracy(probabilities, labels):
  chosen = probabilities[np.arange(len(labels)), labels]
  return (float(np.mean(-np.log(chosen))),
          float(np.mean(probabilities.argmax(-1) == labels)))


def test_png_predictions_equal_the_evaluation(trained, digits_pngs, predictor):
  workdir, config, results = trained
  paths, eval_images, labels = digits_pngs
  names, arrays = predict.load_inputs(predictor, paths)
  assert names == paths and len(arrays) == 360
  # The preprocessing is the eval pipeline's, bit for bit.
  np.testing.assert_array_equal(np.concatenate(arrays), eval_images)
  probabilities = predict.predict(predictor, arrays, batch_size=64)
  assert probabilities.shape == (360, 10)
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
  model = tasks.create(config).model(trainer.model_defaults(config))
  logits = model.apply(checkpoint.load_variables(workdir)[0], eval_images,
                       train=False)
  np.testing.assert_array_equal(probabilities.argmax(-1), logits.argmax(-1))
  loss, accuracy = _loss_and_accuracy(probabilities, labels)
  assert accuracy == pytest.approx(results['eval/accuracy'], abs=1e-6)
  assert loss == pytest.approx(results['eval/loss'], rel=1e-5)


def test_use_ema_predicts_with_the_ema_weights(trained, digits_pngs):
  workdir, _, results = trained
  _, eval_images, labels = digits_pngs
  # A step directory, whose run's config.json is two levels up.
  ema = predict.load(os.path.join(workdir, 'checkpoints', '30'),
                     use_ema=True)
  loss, accuracy = _loss_and_accuracy(
      predict.predict(ema, [eval_images]), labels)
  assert accuracy == pytest.approx(results['eval_ema/accuracy'], abs=1e-6)
  assert loss == pytest.approx(results['eval_ema/loss'], rel=1e-5)
  assert abs(results['eval_ema/loss'] - results['eval/loss']) > 1e-3


def test_run_prints_top_k_with_names_and_writes_jsonl_once(
    trained, digits_pngs, tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(os.path.dirname(trained[0]))
  workdir = os.path.basename(trained[0])  # Relative, as users type it.
  paths, eval_images, _ = digits_pngs
  batch, single = tmp_path / 'batch.npy', tmp_path / 'single.npy'
  np.save(batch, eval_images[:3])
  np.save(single, eval_images[3])
  output = tmp_path / 'preds.jsonl'
  inputs = [paths[0], str(batch), str(single)]
  predictions = predict.run(workdir, inputs, top=3, output=str(output))
  assert [p.input for p in predictions] == [
      paths[0], f'{batch}[0]', f'{batch}[1]', f'{batch}[2]', str(single)]
  first, from_batch = predictions[0], predictions[1]
  assert first.classes == from_batch.classes  # The same image.
  assert first.names == [str(c) for c in first.classes]
  assert first.probabilities == sorted(first.probabilities, reverse=True)
  table = capsys.readouterr().out.splitlines()
  assert len(table) == 6 and table[0].startswith('input')
  assert table[1].startswith(paths[0])
  assert (f'{first.classes[0]}:{first.names[0]} '
          f'{first.probabilities[0]:.4f}') in table[1]
  written = output.read_text()
  records = [json.loads(line) for line in written.splitlines()]
  assert len(records) == 5
  assert records[0] == {'input': paths[0], 'classes': first.classes,
                        'probabilities': first.probabilities,
                        'names': first.names}

  with pytest.raises(FileExistsError, match='pass --overwrite'):
    predict.run(workdir, [paths[1]], output=str(output))
  assert output.read_text() == written
  predict.run(workdir, [paths[1]], output=str(output), overwrite=True)
  assert len(output.read_text().splitlines()) == 1


def test_bad_inputs_are_refused_naming_the_file_and_shapes(
    predictor, tmp_path):
  expects = 'expects images of shape [batch, 32, 32, 1] (NHWC), got '
  cases = {
      'small.npy': (np.zeros((2, 28, 28, 1), np.float32),
                    expects + '(2, 28, 28, 1).'),
      'rgb.npy': (np.zeros((32, 32, 3), np.float32),
                  expects + '(1, 32, 32, 3).'),
      'flat.npy': (np.zeros((4, 1024), np.float32), expects + '(4, 1024).'),
      'raw.npy': (np.zeros((32, 32, 1), np.uint8), 'holds uint8 values'),
      'empty.npy': (np.zeros((0, 32, 32, 1), np.float32),
                    'holds no images (shape (0, 32, 32, 1)).'),
      'nan.npy': (np.full((2, 32, 32, 1), np.nan, np.float32),
                  'holds 2048 non-finite values (NaN or infinity)'),
      'inf.npy': (np.where(np.arange(1024).reshape(32, 32, 1) < 32, np.inf,
                           0).astype(np.float32),
                  'holds 32 non-finite values'),
  }
  for name, (array, expected) in cases.items():
    np.save(tmp_path / name, array)
    with pytest.raises(ValueError) as error:
      predict.load_inputs(predictor, [str(tmp_path / name)])
    assert str(error.value).startswith(f'{tmp_path / name}: ')
    assert expected in str(error.value) and '\n' not in str(error.value)
  (tmp_path / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\nnot an image')
  with pytest.raises(ValueError, match=r'corrupt.png: not a readable image '
                     r'\(Invalid PNG'):
    predict.load_inputs(predictor, [str(tmp_path / 'corrupt.png')])
  with pytest.raises(ValueError, match=r'missing.png: cannot read it \(No '
                     'such file'):
    predict.load_inputs(predictor, [str(tmp_path / 'missing.png')])


def test_converted_checkpoint_uses_its_recorded_preprocessing(
    converted, tmp_path):
  predictor = predict.load(converted)
  assert predictor.class_names is None
  # 300x200: torchvision's resize to 256 and crop of 224 keep the central
  # 175 pixels of 200; the columns outside [63, 238) are cut away.
  pixels = np.full((200, 300, 3), (200, 100, 50), np.uint8)
  pixels[:, :60] = pixels[:, 240:] = 0
  Image.fromarray(pixels).save(tmp_path / 'photo.png')
  _, (image,) = predict.load_inputs(predictor, [str(tmp_path / 'photo.png')])
  recorded = convert.preprocessing('squeezenet1_1', 'torchvision')
  expected = ((np.array([200, 100, 50]) / 255 - np.array(recorded['mean'])) /
              np.array(recorded['std']))
  assert image.shape == (1, 224, 224, 3)
  np.testing.assert_allclose(image, np.broadcast_to(expected, image.shape),
                             atol=1e-5)
  probabilities = predict.predict(predictor, [image, image[:, :64, :64]])
  assert probabilities.shape == (2, 10)

  np.save(tmp_path / 'tiny.npy', np.zeros((1, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match=r'tiny.npy: The images are too small '
                     r'for this model: its feature maps are empty '
                     r'\(\(1, 0, 0, 10\)\) before pooling.'):
    predict.load_inputs(predictor, [str(tmp_path / 'tiny.npy')])
  with pytest.raises(ValueError, match='holds no EMA weights'):
    predict.load(converted, use_ema=True)


def _predict_cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, 'predict.py', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def _fatal_line(stderr):
  """The one line of the error, which must end stderr."""
  assert 'Traceback' not in stderr
  lines = stderr.strip().splitlines()
  assert [line for line in lines if 'FATAL' in line] == lines[-1:]
  return lines[-1]


def test_cli_wrong_shape_exits_with_one_line_keeping_the_output(
    trained, tmp_path):
  batch = tmp_path / 'small.npy'
  np.save(batch, np.zeros((2, 28, 28, 1), np.float32))
  output = tmp_path / 'preds.jsonl'
  output.write_text('earlier predictions\n')
  result = _predict_cli(f'--checkpoint={trained[0]}', f'--output={output}',
                        '--overwrite', str(batch))
  assert result.returncode == 1
  assert _fatal_line(result.stderr) == (
      f'FATAL {batch}: LeNet-5 expects images of shape [batch, 32, 32, 1] '
      '(NHWC), got (2, 28, 28, 1).')
  assert output.read_text() == 'earlier predictions\n'
  assert result.stdout == ''


def test_missing_checkpoint_and_unknown_model_are_one_line_errors(
    converted, tmp_path):
  result = _predict_cli(f'--checkpoint={tmp_path}/nowhere', 'a.png')
  assert result.returncode == 1
  assert _fatal_line(result.stderr) == (
      f'FATAL No checkpoint at {tmp_path}/nowhere: it does not exist.')
  # A checkpoint naming a model this version does not know.
  unknown = str(tmp_path / 'unknown')
  convert.save(unknown, {'params': {'w': np.zeros(1, np.float32)}},
               {**checkpoint.load_meta(converted), 'model': 'resnet51'})
  with pytest.raises(ValueError, match="Unknown model 'resnet51'"):
    predict.load(unknown)
