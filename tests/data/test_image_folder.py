"""Your own images (--config.dataset=image_folder): prepared once per state of
the folder without touching it, trained on to a stated accuracy, predicted
with their class names; a bad folder is one line naming what to fix."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from PIL import ImageDraw

from configs import quickstart
from jaxcnn import checkpoint
from jaxcnn import config_check
from jaxcnn import predict
from jaxcnn import trainer
from jaxcnn.data import catalog
from jaxcnn.data import classification
from jaxcnn.data import datasets
from jaxcnn.data import image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CLASSES = ('circle', 'square', 'triangle')
PER_CLASS = 60
HELD_OUT = 6  # 10% of each class.


def _shape(name: str, rng: np.random.RandomState) -> Image.Image:
  """A bright `name` on a dark background, of random colours and size, up
  to a quarter wider or taller than square."""
  width = int(rng.randint(36, 97))
  height = int(width * rng.uniform(0.8, 1.25))
  image = Image.new('RGB', (width, height),
                    tuple(int(v) for v in rng.randint(0, 100, size=3)))
  side = min(width, height)
  r = rng.uniform(0.3, 0.45) * side
  x, y = width / 2 + rng.uniform(-.1, .1) * side, height / 2
  fill = tuple(int(v) for v in rng.randint(150, 256, size=3))
  draw = ImageDraw.Draw(image)
  if name == 'circle':
    draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
  elif name == 'square':
    draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
  else:
    draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
  return image


def _write(root, split: str, per_class: int, seed: int = 0) -> None:
  """`per_class` images of each class in root/split/<class>/, as JPEG, RGBA
  PNG and grayscale PNG in turn."""
  rng = np.random.RandomState(seed)
  for name in CLASSES:
    directory = os.path.join(root, split, name)
    os.makedirs(directory, exist_ok=True)
    for i in range(per_class):
      image = _shape(name, rng)
      if i % 3 == 0:
        image.save(os.path.join(directory, f'{i}.jpg'), quality=90)
      else:
        image.convert('RGBA' if i % 3 == 1 else 'L').save(
            os.path.join(directory, f'{i}.png'))


def _files(root) -> dict[str, int]:
  """Every file under `root` with its modification time."""
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """(DIR, the files of DIR/train before anything read them); no val/."""
  root = str(tmp_path_factory.mktemp('shapes'))
  _write(root, 'train', PER_CLASS)
  return root, _files(os.path.join(root, 'train'))


def _config(data_dir):
  config = quickstart.get_config()
  config.unlock()
  config.update(dict(
      dataset='image_folder', data_dir=data_dir, train_crop='resize',
      random_flip=True, batch_size=32, eval_batch_size=32, lr_batch_size=32,
      learning_rate=0.05, weight_decay=0.0, num_steps=80, warmup_steps=5,
      eval_every_steps=80, checkpoint_every_steps=80, log_every_steps=20,
      progress_bar=False))
  config.model_kwargs.in_channels = 3  # The shapes' colours are RGB.
  config.lock()
  return config


@pytest.fixture(scope='module')
def trained(folder, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  return workdir, trainer.train_and_evaluate(_config(folder[0]), workdir)


def test_a_folder_without_val_holds_out_a_tenth_of_each_class(folder):
  root, _ = folder
  builder = datasets.load_builder('image_folder', root)
  splits = builder.info.splits
  assert splits['train'].num_examples == 3 * (PER_CLASS - HELD_OUT)
  assert splits['validation'].num_examples == 3 * HELD_OUT
  assert builder.info.features['label'].names == list(CLASSES)
  assert catalog.get_spec('image_folder', root).num_classes == 3
  held_out = [(e['file_name'].decode(), e['label']) for e in
              builder.as_dataset(split='validation').as_numpy_iterator()]
  labels = [label for _, label in held_out]
  assert np.bincount(labels).tolist() == [HELD_OUT] * 3
  for name, label in held_out:
    assert name.startswith(f'train/{CLASSES[label]}/')
  # The same files on every preparation: chosen by their paths alone.
  layout = image_folder.scan(root, 0.1)
  assert sorted(layout.splits['validation']) == sorted(held_out)
  quarter = image_folder.scan(root, 0.25)  # --config.val_fraction=0.25
  assert len(quarter.splits['validation']) == 3 * 15
  assert set(layout.splits['validation']) < set(quarter.splits['validation'])
  assert quarter.fingerprint != layout.fingerprint


def test_preparing_writes_nothing_into_the_class_folders(folder, trained):
  root, before = folder
  assert _files(os.path.join(root, 'train')) == before
  assert sorted(os.listdir(root)) == ['tfds_prepared', 'train']


def test_the_stream_is_split_per_process_and_resumes_exactly(folder):
  config = _config(folder[0])
  data = classification.create(config, model_channels=3)
  stream = data.train_batches()
  batches = [next(stream) for _ in range(7)]  # Past the first epoch (5).
  resumed = next(data.train_batches(start_step=6))
  np.testing.assert_array_equal(resumed['image'], batches[6]['image'])
  np.testing.assert_array_equal(resumed['label'], batches[6]['label'])
  halves = [classification.create(config, 3, process_index=i,
                                   process_count=2) for i in range(2)]
  assert [h.local_train_examples for h in halves] == [81, 81]


def test_training_on_the_folder_reaches_90_percent(trained):
  workdir, final = trained
  assert final['eval/accuracy'] >= 0.9
  meta = checkpoint.load_meta(workdir)
  assert meta['dataset'] == 'image_folder'
  assert (meta['num_classes'], meta['class_names']) == (3, list(CLASSES))


def test_predict_names_each_held_out_image_as_evaluation_scored_it(
    folder, trained):
  root, _ = folder
  workdir, final = trained
  held_out = image_folder.scan(root, 0.1).splits['validation']
  predictor = predict.load(workdir)
  names, arrays = predict.load_inputs(
      predictor, [os.path.join(root, path) for path, _ in held_out])
  top = predict.top_k(names, predict.predict(predictor, arrays), 1,
                      predictor.class_names)
  right = [p.names[0] == CLASSES[label] for p, (_, label) in
           zip(top, held_out)]
  assert sum(right) / len(right) == pytest.approx(final['eval/accuracy'])
  assert {p.names[0] for p in top} == set(CLASSES)


def test_a_changed_folder_is_prepared_again_and_val_is_used(tmp_path):
  root = str(tmp_path)
  _write(root, 'train', 4)
  _write(root, 'val', 2, seed=1)
  first = datasets.load_builder('image_folder', root)
  assert first.info.splits['train'].num_examples == 12
  assert first.info.splits['validation'].num_examples == 6
  prepared = _files(os.path.join(root, 'tfds_prepared'))
  assert datasets.load_builder('image_folder', root).data_dir == first.data_dir
  assert _files(os.path.join(root, 'tfds_prepared')) == prepared  # Reused.
  _shape('circle', np.random.RandomState(2)).save(
      os.path.join(root, 'train', 'circle', 'new.png'))
  second = datasets.load_builder('image_folder', root)
  assert second.data_dir != first.data_dir
  assert second.info.splits['train'].num_examples == 13


def _folder_with(tmp_path, change) -> str:
  root = str(tmp_path)
  _write(root, 'train', 2)
  change(root)
  return root


LAYOUT_PROBLEMS = {
    'no train/': (lambda root: os.rename(f'{root}/train', f'{root}/images'),
                  '{root}/train does not exist: put the training images of '
                  'each class in {root}/train/<class>/'),
    'one class': (lambda root: [
        os.rename(f'{root}/train/{name}', f'{root}/{name}')
        for name in CLASSES[1:]],
                  '{root}/train has 1 class folder(s); a classifier needs at '
                  'least 2: {root}/train/<class>/ for each class'),
    'empty class': (lambda root: os.makedirs(f'{root}/train/star'),
                    '{root}/train/star holds no images (.jpg, .jpeg, .png, '
                    '.bmp, .gif): add some, or remove the class'),
    'val classes differ': (
        lambda root: [os.makedirs(f'{root}/val/{name}') for name in
                      ('circle', 'square', 'star')],
        '{root}/val must have the same class folders as {root}/train (star '
        'not in train/; no triangle)'),
}


@pytest.mark.parametrize('case', sorted(LAYOUT_PROBLEMS))
def test_a_bad_layout_is_one_problem_naming_the_folder(tmp_path, case):
  change, reason = LAYOUT_PROBLEMS[case]
  root = _folder_with(tmp_path, change)
  problems = config_check.problems(_config(root))
  assert problems == [f'--config.data_dir={root!r}: '
                      f'{reason.format(root=root)}']


def test_data_dir_is_required_and_local_for_an_image_folder():
  for data_dir in (None, 'gs://bucket/images'):
    assert config_check.problems(_config(data_dir)) == [
        f'--config.data_dir={data_dir!r}: --config.dataset=image_folder '
        'needs the local folder of your images, DIR with DIR/train/<class>/*']


def test_a_class_of_one_image_cannot_hold_one_out(tmp_path):
  root = _folder_with(tmp_path, lambda root: os.remove(
      f'{root}/train/square/1.png'))
  with pytest.raises(image_folder.ImageFolderError,
                     match=f'{root}/train/square has 1 image: holding out'):
    image_folder.scan(root, 0.1)


def _train(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, 'train.py', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def _fatal_line(result) -> str:
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('FATAL ')
  return last


def test_train_cli_without_train_folder_says_where_to_put_images(tmp_path):
  workdir = tmp_path / 'run'
  result = _train('--config=configs/quickstart.py', f'--workdir={workdir}',
                  '--config.dataset=image_folder',
                  f'--config.data_dir={tmp_path}')
  assert _fatal_line(result) == (
      f"FATAL --config.data_dir='{tmp_path}': {tmp_path}/train does not "
      'exist: put the training images of each class in '
      f'{tmp_path}/train/<class>/')
  assert not workdir.exists()


def test_a_run_stops_naming_the_images_it_cannot_decode(tmp_path):
  root = tmp_path / 'images'
  _write(str(root), 'train', 3)
  (root / 'train' / 'square' / 'broken.jpg').write_bytes(b'not an image')
  with open(root / 'train' / 'circle' / '1.png', 'r+b') as f:
    f.truncate(40)  # A cut-off download.
  workdir = tmp_path / 'run'
  # A ValueError: train.py prints its one line.
  with pytest.raises(image_folder.ImageFolderError) as raised:
    trainer.train_and_evaluate(_config(str(root)), str(workdir))
  message = str(raised.value)
  assert message.startswith(f'2 image(s) cannot be decoded: {root}/train/'
                            'circle/1.png (')
  assert f'{root}/train/square/broken.jpg (Unknown image file format' in (
      message)
  assert message.endswith('. Fix or remove them.') and '\n' not in message
  assert not workdir.exists()
  assert sorted(os.listdir(root)) == ['train']  # Nothing prepared.
