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
  task: str = 'classification'  # Or 'detection'.
  # Detection: the name of each class index (0-based).
  class_names: tuple[str, ...] = ()
  # Detection: the class index of each tfds label when they differ (COCO).
  label_classes: tuple[int, ...] = ()
  # (tfds name, split) of other datasets trained on too, with the same
  # features and labels (VOC 2007+2012).
  more_train: tuple[tuple[str, str], ...] = ()


# COCO's 80 category ids (in the order of tfds coco/2017's labels) and their
# names. Detection keeps COCO's 90-id space: class index = category_id - 1.
COCO_CATEGORIES = (
    (1, 'person'), (2, 'bicycle'), (3, 'car'), (4, 'motorcycle'),
    (5, 'airplane'), (6, 'bus'), (7, 'train'), (8, 'truck'), (9, 'boat'),
    (10, 'traffic light'), (11, 'fire hydrant'), (13, 'stop sign'),
    (14, 'parking meter'), (15, 'bench'), (16, 'bird'), (17, 'cat'),
    (18, 'dog'), (19, 'horse'), (20, 'sheep'), (21, 'cow'), (22, 'elephant'),
    (23, 'bear'), (24, 'zebra'), (25, 'giraffe'), (27, 'backpack'),
    (28, 'umbrella'), (31, 'handbag'), (32, 'tie'), (33, 'suitcase'),
    (34, 'frisbee'), (35, 'skis'), (36, 'snowboard'), (37, 'sports ball'),
    (38, 'kite'), (39, 'baseball bat'), (40, 'baseball glove'),
    (41, 'skateboard'), (42, 'surfboard'), (43, 'tennis racket'),
    (44, 'bottle'), (46, 'wine glass'), (47, 'cup'), (48, 'fork'),
    (49, 'knife'), (50, 'spoon'), (51, 'bowl'), (52, 'banana'), (53, 'apple'),
    (54, 'sandwich'), (55, 'orange'), (56, 'broccoli'), (57, 'carrot'),
    (58, 'hot dog'), (59, 'pizza'), (60, 'donut'), (61, 'cake'),
    (62, 'chair'), (63, 'couch'), (64, 'potted plant'), (65, 'bed'),
    (67, 'dining table'), (70, 'toilet'), (72, 'tv'), (73, 'laptop'),
    (74, 'mouse'), (75, 'remote'), (76, 'keyboard'), (77, 'cell phone'),
    (78, 'microwave'), (79, 'oven'), (80, 'toaster'), (81, 'sink'),
    (82, 'refrigerator'), (84, 'book'), (85, 'clock'), (86, 'vase'),
    (87, 'scissors'), (88, 'teddy bear'), (89, 'hair drier'),
    (90, 'toothbrush'))
COCO_CATEGORY_IDS = tuple(category for category, _ in COCO_CATEGORIES)
_COCO_NAMES = dict(COCO_CATEGORIES)
# 90 slots; the 10 ids COCO never uses are named 'unused_<id>'.
COCO_CLASS_NAMES = tuple(_COCO_NAMES.get(category, f'unused_{category}')
                         for category in range(1, 91))

VOC_CLASS_NAMES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')

_DETECTION_DOWNLOADABLE = (
    'Prepare it once on a machine with internet access: `tfds build {name} '
    '--data_dir=DIR` ({size}), then pass --config.data_dir=DIR (or set '
    '--config.download=True to download it now).')


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
    'digits_detection': DatasetSpec(
        'digits_detection', 'train', 'test', 10, (12.0,), (43.3,),
        prepare_hint='It is prepared automatically from scikit-learn.',
        task='detection', class_names=tuple(str(d) for d in range(10))),
    'coco/2017': DatasetSpec(
        'coco/2017', 'train', 'validation', 90, IMAGENET_MEAN, IMAGENET_STD,
        prepare_hint=_DETECTION_DOWNLOADABLE.format(
            name='coco/2017', size='about 25 GB of downloads'),
        task='detection', class_names=COCO_CLASS_NAMES,
        label_classes=tuple(category - 1 for category in COCO_CATEGORY_IDS)),
    'voc/2007': DatasetSpec(
        'voc/2007', 'train+validation', 'test', 20, IMAGENET_MEAN,
        IMAGENET_STD,
        prepare_hint=_DETECTION_DOWNLOADABLE.format(
            name='voc/2007', size='about 870 MB of downloads'),
        task='detection', class_names=VOC_CLASS_NAMES),
    # The usual VOC recipe: 2007 and 2012 trainval, tested on 2007 test.
    'voc/2007+2012': DatasetSpec(
        'voc/2007', 'train+validation', 'test', 20, IMAGENET_MEAN,
        IMAGENET_STD,
        prepare_hint=_DETECTION_DOWNLOADABLE.format(
            name='voc/2007 voc/2012', size='about 4.5 GB of downloads'),
        task='detection', class_names=VOC_CLASS_NAMES,
        more_train=(('voc/2012', 'train+validation'),)),
}

# Datasets whose builder generates its data offline; prepared on first use.
EMBEDDED = frozenset({'digits', 'digits_detection'})

# Your own images, --config.data_dir=DIR with DIR/train/<class>/*
# (jaxcnn/data/image_folder.py), prepared on first use. Normalised with
# ImageNet's statistics, which pretrained weights expect.
IMAGE_FOLDER = 'image_folder'
_IMAGE_FOLDER_SPEC = DatasetSpec(
    IMAGE_FOLDER, image_folder.TRAIN_SPLIT, image_folder.EVAL_SPLIT, None,
    IMAGENET_MEAN, IMAGENET_STD)


def names(task: str | None = None) -> list[str]:
  """Every value --config.dataset takes (for `task`, when given)."""
  return sorted([name for name, spec in
                 [*DATASETS.items(), (IMAGE_FOLDER, _IMAGE_FOLDER_SPEC)]
                 if task is None or spec.task == task])


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
