"""The datasets train.py knows, and loading their tfds builders with clear errors."""

import tensorflow_datasets as tfds

from jaxcnn import config_check
from jaxcnn.data import digits as _digits  # noqa: F401  Registers `digits`.
# Registers `digits_detection`.
from jaxcnn.data import digits_detection as _digits_detection  # noqa: F401
from jaxcnn.data import image_folder
from jaxcnn.data import image_folder_builder
# Re-exported: the table lives where it can be read without TensorFlow.
from jaxcnn.data.catalog import (  # noqa: F401
    DATASETS, EMBEDDED, IMAGE_FOLDER, IMAGENET_MEAN, IMAGENET_STD,
    DatasetSpec, get_spec)
from jaxcnn.data.image_folder import ImageFolderError  # noqa: F401
from jaxcnn.imports import tensorflow as tf

_DOWNLOADABLE = ('Prepare it once on a machine with internet access: '
                 '`tfds build {name} --data_dir=DIR`, then pass '
                 '--config.data_dir=DIR (or set --config.download=True to '
                 'download it now).')


class DatasetNotPreparedError(RuntimeError):
  """The dataset's files are not in the data dir."""


def load_image_folder(root: str,
                      val_fraction: float) -> tfds.core.DatasetBuilder:
  """The builder of the image folder `root` as its files are now, prepared
  (once per state of the folder) in `root/tfds_prepared/`.

  Raises ImageFolderError naming the folder or the files that cannot be
  used, and what to do.
  """
  layout = image_folder.scan(root, val_fraction)
  builder = image_folder_builder.ImageFolder(layout)
  if not builder.is_prepared():
    problem = config_check.output_dir_problem(builder.data_dir)
    if problem:
      raise ImageFolderError(
          f'Cannot prepare {root} in {builder.data_dir} ({problem}): make '
          f'{root} writable, or copy the folder to a writable place.')
    builder.prepare()
  return builder


def load_builder(name: str, data_dir: str | None, download: bool = False,
                 val_fraction: float = 0.1) -> tfds.core.DatasetBuilder:
  """Returns the builder of a prepared dataset, preparing embedded ones and
  image folders (`val_fraction`: their held-out part when they have no
  `val/`).

  Raises DatasetNotPreparedError, saying how to prepare it, when the data is
  not in `data_dir`.
  """
  if name == IMAGE_FOLDER:
    if data_dir is None:
      raise ImageFolderError(
          f'--config.dataset={IMAGE_FOLDER} reads your images from '
          '--config.data_dir=DIR: pass the folder holding DIR/train/<class>/.')
    return load_image_folder(data_dir, val_fraction)
  spec = get_spec(name)
  return _prepared(name, spec.tfds_name, spec.train_split, data_dir,
                   download)


def load_more_train(name: str, data_dir: str | None, download: bool = False
                    ) -> tuple[tuple[tfds.core.DatasetBuilder, str], ...]:
  """The (builder, split) pairs that dataset `name` trains on besides its
  own train split (VOC 2012's for voc/2007+2012), prepared, or
  DatasetNotPreparedError as load_builder."""
  if name == IMAGE_FOLDER:
    return ()
  return tuple((_prepared(name, tfds_name, split, data_dir, download), split)
               for tfds_name, split in get_spec(name).more_train)


def _prepared(name: str, tfds_name: str, split: str, data_dir: str | None,
              download: bool) -> tfds.core.DatasetBuilder:
  """The builder of `tfds_name`, whose `split` dataset `name` reads."""
  spec = get_spec(name)
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  if name in EMBEDDED or download:
    try:
      builder.download_and_prepare()
    except FileExistsError:
      # Another process (a search's parallel children, two runs started at
      # once) renamed its finished copy into place first: read that one.
      builder = tfds.builder(tfds_name, data_dir=data_dir)
  try:
    builder.as_dataset(split=split)
  except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
    where = data_dir or tfds.core.constants.DATA_DIR
    hint = spec.prepare_hint or _DOWNLOADABLE.format(name=spec.tfds_name)
    smoke = ('--config.dataset=digits --config.image_size=64'
             if spec.task == 'classification' else
             '--config.dataset=digits_detection --config.image_size=128')
    part = f' (its {tfds_name} part)' if tfds_name != spec.tfds_name else ''
    raise DatasetNotPreparedError(
        f'Dataset {name!r}{part} is not prepared in {where}. {hint} To '
        'train on another dataset pass --config.dataset=NAME (e.g. '
        f'{smoke} for a smoke run, which needs no download).') from e
  return builder
