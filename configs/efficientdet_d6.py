"""EfficientDet-D6 on COCO 2017, the official recipe
(configs/efficientdet.py)."""

from configs import efficientdet


def get_config():
  return efficientdet.get_config('efficientdet_d6')
