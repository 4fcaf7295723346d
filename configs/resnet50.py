"""ResNet-50 on ImageNet: torchvision's recipe with the modern schedule.

SGD Nesterov 0.9, lr 0.1 per 256 images (0.4 at batch 1024), 5-epoch linear
warmup then cosine, weight decay 1e-4 (not on BatchNorm or biases), label
smoothing 0.1, 90 epochs. Expected top-1 about 76-77%.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model = 'resnet50'
  config.dataset = 'imagenet2012'
  config.lock()
  return config
