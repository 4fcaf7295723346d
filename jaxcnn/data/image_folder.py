"""Your own images as a dataset (`--config.dataset=image_folder`): reading and
checking the folder, without TensorFlow.

`--config.data_dir=DIR` holds `DIR/train/<class>/...`, the training images
of each class (in any sub-folders, of any sizes), and optionally
`DIR/val/<class>/...` with the same class folders, the evaluation images.
Without `val/`, `val_fraction` of each class is held out for evaluation:
the same files on every run and machine, chosen by a hash of their paths.
Images are the files named `.jpg`, `.jpeg`, `.png` (or `.bmp`, `.gif`,
which TensorFlow also decodes); other files and hidden ones are ignored.
Classes are the sorted folder names, labels their positions.

`jaxcnn.data.image_folder_builder` prepares the folder once as a tfds
dataset in `DIR/tfds_prepared/`, the only place anything is written.
"""

import dataclasses
import hashlib
import os
from typing import Iterator

TRAIN_DIR = 'train'
VAL_DIR = 'val'
PREPARED_DIR = 'tfds_prepared'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
TRAIN_SPLIT = 'train'
EVAL_SPLIT = 'validation'
# Part of the fingerprint: a new one re-prepares every folder.
FORMAT_VERSION = 1


class ImageFolderError(ValueError):
  """The folder cannot be read as a dataset; the message names the folder or
  file and says what to do."""


def _visible(name: str) -> bool:
  return not name.startswith('.')


def class_dirs(split_dir: str) -> list[str]:
  """The class folders of `split_dir`, sorted; hidden ones left out."""
  return sorted(entry.name for entry in os.scandir(split_dir)
                if entry.is_dir() and _visible(entry.name))


def image_files(class_dir: str) -> Iterator[str]:
  """The image files under `class_dir`, in a fixed order."""
  for directory, subdirs, files in os.walk(class_dir):
    subdirs[:] = sorted(filter(_visible, subdirs))
    for name in sorted(files):
      if _visible(name) and name.lower().endswith(IMAGE_EXTENSIONS):
        yield os.path.join(directory, name)


def _no_images(class_dir: str) -> ImageFolderError:
  return ImageFolderError(
      f'{class_dir} holds no images ({", ".join(IMAGE_EXTENSIONS)}): add '
      'some, or remove the class.')


def class_names(root: str) -> list[str]:
  """The classes of the folder `root`: the sorted folders of `root/train/`."""
  train = os.path.join(root, TRAIN_DIR)
  if not os.path.isdir(train):
    raise ImageFolderError(
        f'{train} does not exist: put the training images of each class in '
        f'{train}/<class>/.')
  names = class_dirs(train)
  if len(names) < 2:
    raise ImageFolderError(
        f'{train} has {len(names)} class folder(s); a classifier needs at '
        f'least 2: {train}/<class>/ for each class.')
  return names


def check(root: str) -> list[str]:
  """The class names of the folder `root`, after checking its layout.

  Raises ImageFolderError for the first problem: no `train/`, fewer than 2
  classes, an empty class folder, or `val/` classes other than `train/`'s.
  Stops at each folder's first image, so it is quick on any number of
  images; the images themselves are read when the folder is prepared.
  """
  names = class_names(root)
  val = os.path.join(root, VAL_DIR)
  splits = [TRAIN_DIR]
  if os.path.isdir(val):
    splits.append(VAL_DIR)
    val_names = class_dirs(val)
    if val_names != names:
      differences = []
      extra = sorted(set(val_names) - set(names))
      missing = sorted(set(names) - set(val_names))
      if extra:
        differences.append(f'{", ".join(extra)} not in {TRAIN_DIR}/')
      if missing:
        differences.append(f'no {", ".join(missing)}')
      raise ImageFolderError(
          f'{val} must have the same class folders as '
          f'{os.path.join(root, TRAIN_DIR)} ({"; ".join(differences)}).')
  for split in splits:
    for name in names:
      class_dir = os.path.join(root, split, name)
      if next(image_files(class_dir), None) is None:
        raise _no_images(class_dir)
  return names


@dataclasses.dataclass(frozen=True)
class Layout:
  """What an image folder holds: for each split, (path relative to the
  folder, label) in a fixed order."""
  root: str
  class_names: tuple[str, ...]
  splits: dict[str, tuple[tuple[str, int], ...]]
  # Changes when an image is added, removed, renamed or rewritten, or when
  # another val_fraction holds out other images.
  fingerprint: str


def _held_out(class_dir: str, files: list[str],
              val_fraction: float) -> set[str]:
  """The `val_fraction` of a class's files (at least 1, leaving at least 1)
  whose paths hash lowest."""
  if len(files) < 2:
    raise ImageFolderError(
        f'{class_dir} has {len(files)} image: holding out some for '
        'evaluation needs at least 2. Add images, or put evaluation images '
        f'in {VAL_DIR}/<class>/ beside {TRAIN_DIR}/.')
  count = min(len(files) - 1, max(1, round(len(files) * val_fraction)))
  ranked = sorted(files, key=lambda path: hashlib.sha256(
      os.path.relpath(path, class_dir).encode()).hexdigest())
  return set(ranked[:count])


def scan(root: str, val_fraction: float) -> Layout:
  """Every image of the folder `root`, checked as `check` does, split into
  train and eval examples (`val/`, else a held-out `val_fraction`)."""
  root = os.path.abspath(root)
  names = check(root)
  has_val = os.path.isdir(os.path.join(root, VAL_DIR))
  splits = {TRAIN_SPLIT: [], EVAL_SPLIT: []}
  for label, name in enumerate(names):
    class_dir = os.path.join(root, TRAIN_DIR, name)
    files = list(image_files(class_dir))
    held = set() if has_val else _held_out(class_dir, files, val_fraction)
    splits[TRAIN_SPLIT] += [(f, label) for f in files if f not in held]
    splits[EVAL_SPLIT] += [(f, label) for f in files if f in held]
    if has_val:
      splits[EVAL_SPLIT] += [
          (f, label) for f in image_files(os.path.join(root, VAL_DIR, name))]
  digest = hashlib.sha256(repr(
      (FORMAT_VERSION, names, None if has_val else val_fraction)).encode())
  for split, examples in splits.items():
    for path, label in examples:
      stat = os.stat(path)
      digest.update(repr((split, os.path.relpath(path, root), label,
                          stat.st_size, stat.st_mtime_ns)).encode())
  return Layout(
      root, tuple(names),
      {split: tuple((os.path.relpath(path, root), label)
                    for path, label in examples)
       for split, examples in splits.items()},
      digest.hexdigest()[:16])


def prepared_dir(root: str, fingerprint: str) -> str:
  """Where the folder `root` in the state `fingerprint` is prepared."""
  return os.path.join(os.path.abspath(root), PREPARED_DIR, fingerprint)
