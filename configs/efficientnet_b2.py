"""EfficientNet-B2, official TPU recipe (see configs/efficientnet.py)."""

from configs import efficientnet


def get_config():
  return efficientnet.get_config('b2')
