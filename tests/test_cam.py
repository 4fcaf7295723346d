"""cam.py / jaxcnn.cam: the map of a classifier trained on digits pasted in
one quadrant of a blank canvas peaks in that quadrant; CAM is Grad-CAM's
identity for pool + dense heads; one-line errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image
import pytest
from sklearn import datasets

from jaxcnn import cam
from jaxcnn import convert
from jaxcnn import models
from tests import test_export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 4  # Digits 0-3.
_DIGITS = datasets.load_digits()


def canvases(seed, n):
  """32x32 blank images, each with a digit 0-3 (8x8 scaled to 12x12, values
  in [0, 1]) at a random place in a random quadrant: (images, digits,
  quadrants)."""
  rng = np.random.default_rng(seed)
  keep = _DIGITS.target < CLASSES
  pool = np.kron(_DIGITS.images[keep] / 16.0, np.ones((1, 3, 3)))[:, ::2, ::2]
  labels = _DIGITS.target[keep]
  chosen, quadrants = rng.integers(0, len(pool), n), rng.integers(0, 4, n)
  images = np.zeros((n, 32, 32, 1), np.float32)
  for image, index, quadrant in zip(images, chosen, quadrants):
    row, col = 16 * (quadrant // 2) + rng.integers(0, 5), 16 * (
        quadrant % 2) + rng.integers(0, 5)
    image[row:row + 12, col:col + 12, 0] = pool[index]
  return images, labels[chosen], quadrants


def quadrant(peak):
  """0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
  return 2 * (peak[0] // 16) + peak[1] // 16


@pytest.fixture(scope='module')
def corner_model(tmp_path_factory):
  """LeNet-5 trained (Adam, 150 steps of 64) on `canvases`, saved as a
  checkpoint whose preprocessing maps PNG pixels to [0, 1]."""
  model = models.create('lenet5', num_classes=CLASSES)
  params = jax.jit(model.init)(jax.random.key(0, impl='rbg'),
                               jnp.zeros((1, 32, 32, 1)))['params']
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss(params):
      logits = model.apply({'params': params}, images)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for seed in range(150):
    images, labels, _ = canvases(seed, 64)
    params, opt_state = step(params, opt_state, images, labels)
  path = str(tmp_path_factory.mktemp('corner') / 'lenet5')
  convert.save(path, {'params': jax.device_get(params), 'batch_stats': {}}, {
      'model': 'lenet5', 'source': 'test', 'num_classes': CLASSES,
      'model_kwargs': {}, 'preprocessing': {
          'crop_size': 32, 'resize_size': 32, 'interpolation': 'bilinear',
          'mean': [0.0], 'std': [1.0]}})
  return path, model, {'params': params}


def test_gradcam_of_the_digit_peaks_in_its_quadrant(corner_model):
  _, model, variables = corner_model
  images, labels, quadrants = canvases(10_000, 64)
  hits = []
  for digit in range(CLASSES):
    chosen = labels == digit
    # At conv1: LeNet's conv3 sees all of conv2's pooled 5x5 map at once, so
    # the class gradient at conv2 differs per position and Grad-CAM's
    # spatial mean of it blurs where the digit is (89% of peaks in the
    # quadrant there, measured; 100% at conv1).
    maps, _, explained, layer = cam.class_maps(
        model, variables, images[chosen], layer='conv1', class_index=digit)
    assert maps.shape[1:] == (28, 28)
    assert list(explained) == [digit] * chosen.sum()
    for heatmap, expected in zip(cam.upsample(maps, (32, 32)),
                                 quadrants[chosen]):
      peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
      hits.append(quadrant(peak) == expected)
  assert len(hits) == 64 and np.mean(hits) >= 0.95, hits


def test_run_writes_an_overlay_per_image_and_the_results(corner_model,
                                                         tmp_path):
  path = corner_model[0]
  images = canvases(10_001, 3)[0]
  np.save(tmp_path / 'canvases.npy', images)
  Image.fromarray(np.round(images[0, ..., 0] * 255).astype(np.uint8)).save(
      tmp_path / 'first.png')
  inputs = [str(tmp_path / 'first.png'), str(tmp_path / 'canvases.npy')]
  output = tmp_path / 'maps'
  results = cam.run(path, inputs, str(output), top=2)
  assert [r.input for r in results] == [inputs[0]] + [
      f'{inputs[1]}[{i}]' for i in range(3)]
  # The PNG is the same image through the checkpoint's preprocessing.
  assert results[0].peak == results[1].peak
  assert results[0].classes == results[1].classes
  assert results[0].explained == results[0].classes[0]
  assert len(results[0].classes) == 2
  records = [json.loads(line) for line in
             (output / cam.RESULTS_FILE).read_text().splitlines()]
  assert [r['peak'] for r in records] == [r.peak for r in results]
  assert [r['image'] for r in records] == [
      str(output / name) for name in ('first_gradcam.png',
                                      'canvases_0_gradcam.png',
                                      'canvases_1_gradcam.png',
                                      'canvases_2_gradcam.png')]
  with Image.open(output / 'first_gradcam.png') as png:
    assert png.format == 'PNG' and png.size == (700, 380)
  with pytest.raises(FileExistsError, match='first_gradcam.png exists; pass '
                     '--overwrite'):
    cam.run(path, inputs[:1], str(output))
  with pytest.raises(ValueError, match='CAM needs a head that is global '
                     'average pooling of conv2'):
    cam.run(path, inputs[:1], str(tmp_path / 'cam'), method='cam')
  assert not os.path.exists(tmp_path / 'cam')


def test_a_chosen_class_and_layer_are_explained(corner_model):
  _, model, variables = corner_model
  images = canvases(20_000, 4)[0]
  maps, probabilities, explained, layer = cam.class_maps(
      model, variables, images, layer='conv1', class_index=2)
  assert layer == 'conv1' and maps.shape == (4, 28, 28)
  assert list(explained) == [2] * 4
  np.testing.assert_allclose(probabilities.sum(-1), 1, rtol=1e-5)
  with pytest.raises(ValueError, match=r"No layer 'fc1' with an \[N, H, W, "
                     r"C\] output; the last ones: conv1, conv2, conv3\."):
    cam.class_maps(model, variables, images, layer='fc1')
  with pytest.raises(ValueError, match=r'--class=4 is not one of the '
                     r"model's 4 classes \(0 to 3\)"):
    cam.class_maps(model, variables, images, class_index=4)
  with pytest.raises(ValueError, match='CAM needs a head that is global '
                     'average pooling of conv2'):
    cam.class_maps(model, variables, images, method='cam')


def test_cam_is_the_relu_of_gradcam_times_positions_for_a_resnet():
  model = models.create('resnet18', num_classes=5)
  variables = test_export.random_variables(model, (64, 64, 3))
  images = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(
      np.float32)
  _, probabilities, explained, layer = cam.class_maps(model, variables,
                                                      images)
  assert layer == 'layer4_1'
  assert list(explained) == list(probabilities.argmax(-1))
  signs = set()
  for k in range(5):
    grad = cam.class_maps(model, variables, images, class_index=k)[0]
    class_map = cam.class_maps(model, variables, images, method='cam',
                               class_index=k)[0]
    assert grad.shape == class_map.shape == (3, 2, 2)
    # Grad-CAM's weights are the head's column over the 4 positions.
    np.testing.assert_allclose(grad * 4, np.maximum(class_map, 0), rtol=1e-4,
                               atol=1e-6 * np.abs(class_map).max())
    signs |= set(np.sign(class_map).ravel())
  assert signs == {-1.0, 1.0}


def test_cli_writes_the_overlays_of_a_chosen_class(corner_model, tmp_path):
  path = corner_model[0]
  np.save(tmp_path / 'two.npy', canvases(30_000, 2)[0])
  result = subprocess.run(
      [sys.executable, 'cam.py', f'--checkpoint={path}',
       f'--output={tmp_path / "out"}', '--class=1', str(tmp_path / 'two.npy')],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'cam.jsonl', 'two_0_gradcam.png', 'two_1_gradcam.png']
  assert result.stdout.splitlines()[0].startswith(
      f'{tmp_path / "two.npy"}[0]: gradcam of class 1 peaks at (row, col) (')
