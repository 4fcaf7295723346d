"""The datasets train.py knows, and loading their tfds builders with clear errors."""

import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcnn.data import digits as _digits  # noqa: F401  Registers `digits`.
# Re-exported: the table lives where it can be read without TensorFlow.
from jaxcnn.data.catalog import (  # noqa: F401
    DATASETS, EMBEDDED, IMAGENET_MEAN, IMAGENET_STD, DatasetSpec, get_spec)

_DOWNLOADABLE = ('Prepare it once on a machine with internet access: '
                 '`tfds build {name} --data_dir=DIR`, then pass '
                 '--config.data_dir=DIR (or set --config.download=True to '
                 'download it now).')


class DatasetNotPreparedError(RuntimeError):
  """The dataset's files are not in the data dir."""


def load_builder(name: str, data_dir: str | None,
                 download: bool = False) -> tfds.core.DatasetBuilder:
  """Returns the builder of a prepared dataset, preparing embedded ones.

  Raises DatasetNotPreparedError, saying how to prepare it, when the data is
  not in `data_dir`.
  """
  spec = get_spec(name)
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if name in EMBEDDED or download:
    builder.download_and_prepare()
  try:
    builder.as_dataset(split=spec.train_split)
  except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
    where = data_dir or tfds.core.constants.DATA_DIR
    hint = spec.prepare_hint or _DOWNLOADABLE.format(name=spec.tfds_name)
    raise DatasetNotPreparedError(
        f'Dataset {name!r} is not prepared in {where}. {hint} To train on '
        'another dataset pass --config.dataset=NAME (e.g. '
        '--config.dataset=digits --config.image_size=64 for a smoke run, '
        'which needs no download).') from e
  return builder
