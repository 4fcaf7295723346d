"""What a config can name in jaxcnn.data, importable without TensorFlow.

The datasets train.py knows and the choices of the input pipeline, so that a
config is checked (`jaxcnn.config_check`) before TensorFlow is loaded.
"""

import dataclasses

from jaxcnn.data import image_folder

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

TRAIN_CROPS = ('random_resized', 'pad_and_crop', 'resize')
AUGMENTS = ('none', 'randaugment', 'autoaugment')
INTERPOLATIONS = ('bilinear', 'bicubic', 'nearest', 'area')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the input pipeline needs to know about a dataset."""
  tfds_name: str
  train_split: str
  eval_split: str
  # None for an image folder until get_spec is given the folder.
  num_classes: int | None
  mean: tuple[float, ...]  # Per channel, on the 0-255 scale.
  std: tuple[float, ...]
  prepare_hint: str = ''


DATASETS: dict[str, DatasetSpec] = {
    'imagenet2012': DatasetSpec(
        'imagenet2012', 'train', 'validation', 1000, IMAGENET_MEAN,
        IMAGENET_STD,
        prepare_hint=(
            'ImageNet cannot be downloaded automatically: download '
            'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
            'image-net.org into DIR/downloads/manual/, run `tfds build '
            'imagenet2012 --data_dir=DIR`, then pass --config.data_dir=DIR.')),
    'imagenette': DatasetSpec(
        'imagenette', 'train', 'validation', 10, IMAGENET_MEAN,
        IMAGENET_STD),
    'cifar10': DatasetSpec(
        'cifar10', 'train', 'test', 10, (125.3, 123.0, 113.9),
        (63.0, 62.1, 66.7)),
    'cifar100': DatasetSpec(
        'cifar100', 'train', 'test', 100, (129.3, 124.1, 112.4),
        (68.2, 65.4, 70.4)),
    'mnist': DatasetSpec('mnist', 'train', 'test', 10, (33.3,), (78.6,)),
    'fashion_mnist': DatasetSpec(
        'fashion_mnist', 'train', 'test', 10, (72.9,), (90.0,)),
    'digits': DatasetSpec(
        'digits', 'train', 'test', 10, (78.0,), (106.0,),
        prepare_hint='It is prepared automatically from scikit-learn.'),
}

# Datasets whose builder generates its data offline; prepared on first use.
EMBEDDED = frozenset({'digits'})

# Your own images, --config.data_dir=DIR with DIR/train/<class>/*
# (jaxcnn/data/image_folder.py), prepared on first use. Normalised with
# ImageNet's statistics, which pretrained weights expect.
IMAGE_FOLDER = 'image_folder'
_IMAGE_FOLDER_SPEC = DatasetSpec(
    IMAGE_FOLDER, image_folder.TRAIN_SPLIT, image_folder.EVAL_SPLIT, None,
    IMAGENET_MEAN, IMAGENET_STD)


def names() -> list[str]:
  """Every value --config.dataset takes."""
  return sorted([*DATASETS, IMAGE_FOLDER])


def get_spec(name: str, data_dir: str | None = None) -> DatasetSpec:
  """The spec of the dataset `name`; an image folder's class count is read
  from `data_dir` (ImageFolderError when it is not a usable folder)."""
  if name == IMAGE_FOLDER:
    if data_dir is None:
      return _IMAGE_FOLDER_SPEC
    return dataclasses.replace(
        _IMAGE_FOLDER_SPEC,
        num_classes=len(image_folder.class_names(data_dir)))
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}. Known datasets: '
                     f'{", ".join(names())}.')
  return DATASETS[name]


def channel_statistics(mean, std, channels: int) -> tuple[tuple, tuple]:
  """The dataset's per-channel mean/std for images decoded to `channels`
  (grayscale decoded as RGB repeats them; RGB decoded as grayscale averages)."""
  if len(mean) == channels:
    return tuple(mean), tuple(std)
  if len(mean) == 1:
    return tuple(mean) * channels, tuple(std) * channels
  if channels == 1:
    return (sum(mean) / len(mean),), (sum(std) / len(std),)
  raise ValueError(f'Cannot feed {len(mean)}-channel images to a model '
                   f'expecting {channels} channels.')
