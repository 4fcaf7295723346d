"""Labelled files as eval batches, without TensorFlow (`evaluate.py --files`).

Two layouts:
- a folder `DIR/<class name>/...` of image files (in any sub-folders, named
  as `jaxcnn.data.image_folder` takes them), each class folder matched by
  name to one of the checkpoint's classes; classes without a folder are
  simply not among the labels;
- a .npy batch of preprocessed float images `[N, H, W, C]` (or one
  `[H, W, C]`), as `predict.py` takes them, with a .npy of N integer labels.

Image files get the checkpoint's evaluation preprocessing as `predict.py`
gives it (`predict.Predictor.load_image`), decoded one batch at a time. The
batches are padded with mask-0 rows to one size, as the eval pipeline's are,
and each process reads only its rows of every batch.
"""

import dataclasses
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from jaxcnn import predict
from jaxcnn.data import image_folder


@dataclasses.dataclass(frozen=True)
class Examples:
  """N labelled images: `images(indices)` are their model inputs
  `[len(indices), *image_shape]` float32."""
  labels: np.ndarray  # [N] int32, in [0, classes).
  image_shape: tuple[int, ...]
  images: Callable[[np.ndarray], np.ndarray]


def _folder(root: str, predictor: predict.Predictor,
            class_names: Sequence[str]) -> Examples:
  folders = image_folder.class_dirs(root)
  unknown = [name for name in folders if name not in class_names]
  if unknown:
    shown = ', '.join(class_names[:10]) + ', ...' * (len(class_names) > 10)
    raise ValueError(f'--files={root}: class folder {unknown[0]!r} is not a '
                     f'class of the checkpoint ({shown}); rename or remove '
                     'it.')
  paths, labels = [], []
  for name in folders:
    files = list(image_folder.image_files(os.path.join(root, name)))
    paths += files
    labels += [class_names.index(name)] * len(files)
  if not paths:
    raise ValueError(
        f'--files={root}: holds no images in class folders ({root}/<class '
        f'name>/*{", *".join(image_folder.IMAGE_EXTENSIONS)}).')
  prep = predictor.preprocessing
  if prep is None:
    raise ValueError(f'--files={root}: the checkpoint records no '
                     'preprocessing for image files; pass a preprocessed '
                     '.npy batch and its --labels instead.')

  def images(indices: np.ndarray) -> np.ndarray:
    return np.stack([predictor.load_image(paths[i]) for i in indices])
  return Examples(np.asarray(labels, np.int32),
                  (prep.image_size, prep.image_size,
                   predictor.model.in_channels), images)


def _npy(images_path: str, labels_path: str | None,
         predictor: predict.Predictor, classes: int) -> Examples:
  if labels_path is None:
    raise ValueError(f'--files={images_path}: pass --labels=LABELS.npy, the '
                     'class index of each image.')
  try:
    [array] = predict.load_inputs(predictor, [images_path])[1]
  except ValueError as e:  # Its message starts with the path.
    raise ValueError(f'--files={e}') from None
  try:
    labels = np.load(labels_path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'--labels={labels_path}: cannot read it as .npy '
                     f'({e}).') from None
  labels = np.atleast_1d(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'--labels={labels_path}: holds {labels.dtype} values '
                     f'of shape {labels.shape}; expected [N] integer class '
                     'indices.')
  if len(labels) != len(array):
    raise ValueError(f'--labels={labels_path}: holds {len(labels)} labels '
                     f'for the {len(array)} images of {images_path}; pass '
                     'one per image.')
  outside = np.flatnonzero((labels < 0) | (labels >= classes))
  if outside.size:
    raise ValueError(f'--labels={labels_path}: label {labels[outside[0]]} '
                     f'(image {outside[0]}) is not a class of the '
                     f'checkpoint, which has {classes} (0 to {classes - 1}).')
  return Examples(labels.astype(np.int32), array.shape[1:],
                  lambda indices: array[indices])


def read(files: str, labels: str | None, predictor: predict.Predictor,
         class_names: Sequence[str]) -> Examples:
  """The examples of `files` (a folder of class folders, or a .npy batch
  with its `labels` .npy), checked before any image is decoded.

  Raises ValueError naming the flag (`--files`, `--labels`) on a bad input.
  """
  if not os.path.exists(files):
    raise ValueError(f'--files={files}: does not exist.')
  if os.path.isdir(files):
    if labels is not None:
      raise ValueError(f'--labels={labels}: a folder\'s labels are its '
                       'class folders; pass --labels only with a .npy '
                       '--files batch.')
    return _folder(files, predictor, class_names)
  if not files.lower().endswith('.npy'):
    raise ValueError(f'--files={files}: pass a folder of class folders '
                     '(DIR/<class name>/*.png) or a .npy batch of '
                     'preprocessed images.')
  return _npy(files, labels, predictor, len(class_names))


def eval_batches(examples: Examples, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's part (its `batch_size / process_count` rows) of every
  global batch of `batch_size`: `image`, `label` and `mask` (0 on the
  padding rows after the last example), every example once."""
  local = batch_size // process_count
  count = len(examples.labels)
  for start in range(0, count, batch_size):
    rows = start + process_index * local + np.arange(local)
    real = rows[rows < count]
    image = np.zeros((local, *examples.image_shape), np.float32)
    label = np.zeros(local, np.int32)
    mask = np.zeros(local, np.float32)
    if real.size:
      image[:real.size] = examples.images(real)
      label[:real.size] = examples.labels[real]
      mask[:real.size] = 1.0
    yield {'image': image, 'label': label, 'mask': mask}
