"""Images/s of the ImageNet train input pipeline, per CPU core.

  python -m benchmarks.input_throughput --recipe=resnet50

Runs the real `jaxcnn.data.classification` train stream (JPEG decode of a random
crop window, resize, flip, the recipe's RandAugment/AutoAugment, normalise,
batch) over generated JPEGs of ImageNet's typical sizes, served through
`tfds.testing.mock_data` as the imagenet2012 train split. Measures images/s
with tf.data limited to 1 thread and to every core, and says how many cores
keep a target rate fed (--target, e.g. ResNet-50's 7000 images/s on an H100).
"""

import datetime
import importlib
import math
import os
import platform
import sys
import time
from typing import Any

from absl import app
from absl import flags
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from benchmarks import report as report_lib
from jaxcnn.data import classification

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a script: the module is also a library."""
  flags.DEFINE_string('recipe', 'resnet50', 'Config module in configs/.')
  flags.DEFINE_integer('images', 256, 'Distinct generated JPEGs.')
  flags.DEFINE_integer('batch', 128, 'Images per batch.')
  flags.DEFINE_integer('batches', 20, 'Timed batches per thread setting.')
  flags.DEFINE_integer('warmup_batches', 3, 'Untimed batches first.')
  flags.DEFINE_list('threads', ['1', 'all'], 'tf.data thread counts to run.')
  flags.DEFINE_float('target', 7000.0, 'Images/s to feed (default: ResNet-50 '
                     'on one H100).')
  flags.DEFINE_string('json_out', '', 'Also write the report here as JSON.')


# Common ImageNet train image sizes (height, width); the mean is ~400x350.
_SIZES = ((375, 500), (333, 500), (500, 375), (500, 333), (400, 500),
          (281, 500), (500, 500), (366, 500))


def natural_image(rng: np.random.RandomState, height: int,
                  width: int) -> np.ndarray:
  """uint8 RGB with a natural image's 1/f amplitude spectrum, so that it
  compresses (and decodes) like a photo rather than like white noise."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width))
  noise = rng.normal(size=(3, height, width // 2 + 1)) + 1j * rng.normal(
      size=(3, height, width // 2 + 1))
  channels = np.fft.irfft2(noise * falloff, s=(height, width))
  # Correlated channels, as in photos.
  mixed = np.tensordot(np.array([[1.0, 0.3, 0.1], [0.8, 0.5, 0.1],
                                 [0.6, 0.3, 0.5]]), channels, axes=1)
  mixed -= mixed.mean(axis=(1, 2), keepdims=True)
  image = 128 + 50 * mixed / mixed.std()
  return np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def generated_jpegs(count: int, quality: int = 90,
                    seed: int = 0) -> list[bytes]:
  """`count` JPEGs of `natural_image`s cycling through ImageNet sizes."""
  rng = np.random.RandomState(seed)
  return [tf.io.encode_jpeg(natural_image(rng, *_SIZES[i % len(_SIZES)]),
                            quality=quality).numpy() for i in range(count)]


def _recipe(name: str) -> ml_collections.ConfigDict:
  config = importlib.import_module(f'configs.{name}').get_config()
  config.unlock()
  return config


def measure(config: ml_collections.ConfigDict, jpegs: list[bytes],
            threads: int, batches: int,
            warmup_batches: int) -> dict[str, Any]:
  """Images/s of the recipe's train batches with tf.data on `threads`."""
  labels = np.arange(len(jpegs), dtype=np.int64) % 1000

  def as_dataset(*args, **kwargs):
    del args, kwargs
    return tf.data.Dataset.from_tensor_slices(
        {'image': list(jpegs), 'label': labels})

  config = config.copy_and_resolve_references()
  config.shuffle_buffer = len(jpegs)
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                              as_dataset_fn=as_dataset):
    data = classification.create(config, model_channels=3)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    stream = data.train_dataset().with_options(options).as_numpy_iterator()
    for _ in range(warmup_batches):
      batch = next(stream)
    start = time.perf_counter()
    for _ in range(batches):
      batch = next(stream)
    seconds = time.perf_counter() - start
  images_per_s = batches * config.batch_size / seconds
  return {'threads': threads, 'images_per_s': images_per_s,
          'images_per_s_per_core': images_per_s / threads,
          'batch_shape': list(batch['image'].shape)}


def cores_needed(target: float, images_per_s_per_core: float) -> int:
  return math.ceil(target / images_per_s_per_core)


def main(argv):
  del argv
  tf.config.set_visible_devices([], 'GPU')  # The pipeline runs on the host.
  config = _recipe(FLAGS.recipe)
  config.batch_size = FLAGS.batch
  jpegs = generated_jpegs(FLAGS.images)
  cores = os.cpu_count()
  results = []
  for threads in FLAGS.threads:
    threads = cores if threads == 'all' else int(threads)
    result = measure(config, jpegs, threads, FLAGS.batches,
                     FLAGS.warmup_batches)
    result['cores_for_target'] = cores_needed(
        FLAGS.target, result['images_per_s_per_core'])
    results.append(result)
  report = {
      'command': 'python -m benchmarks.input_throughput ' +
                 ' '.join(sys.argv[1:]),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'recipe': FLAGS.recipe, 'image_size': config.image_size,
      'train_crop': config.train_crop, 'interpolation': config.interpolation,
      'augment': config.augment, 'random_flip': config.random_flip,
      'jpegs': len(jpegs),
      'mean_jpeg_kb': float(np.mean([len(j) for j in jpegs]) / 1024),
      'target_images_per_s': FLAGS.target,
      'cpu': platform.processor() or platform.machine(), 'cores': cores,
      'load_average': os.getloadavg()[0], 'python': platform.python_version(),
      'tensorflow': tf.__version__, 'tensorflow_datasets': tfds.__version__,
      'results': results}
  report_lib.emit(report, FLAGS.json_out)
  for r in results:
    print(f'{r["threads"]} thread(s): {r["images_per_s"]:.0f} images/s, '
          f'{r["images_per_s_per_core"]:.0f} per core -> '
          f'{r["cores_for_target"]} cores for {FLAGS.target:.0f} images/s')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
