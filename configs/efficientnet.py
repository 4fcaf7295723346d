"""The official TPU EfficientNet recipe, shared by efficientnet_b0.py ... b7.py.

RMSProp (TF-style: decay 0.9, momentum 0.9, eps 1e-3), lr 0.016 per 256
images, 5-epoch warmup then x0.97 every 2.4 epochs, L2 1e-5 (not on BatchNorm),
EMA 0.9999 (evaluated as eval_ema/*), label smoothing 0.1, 350 epochs at batch
2048, AutoAugment, bicubic random-resized crops at the variant's resolution.

The learning rate scales linearly with --config.batch_size (lr_batch_size is
256), so a smaller batch keeps the recipe: e.g. batch 512 trains at 0.032.
"""

from configs import base
from jaxcnn.models import efficientnet

# RandAugment magnitude of the reference (B6: none published; B5's is used).
_RANDAUGMENT_MAGNITUDE = {'b5': 17.0, 'b6': 17.0, 'b7': 28.0}
_CROP_PADDING = 32  # Eval crop fraction: size / (size + 32), as the reference.


def get_config(variant: str):
  name = f'efficientnet_{variant}'
  size = efficientnet.IMAGE_SIZES[name]
  config = base.get_config()
  config.model = name
  config.dataset = 'imagenet2012'
  config.image_size = size
  config.interpolation = 'bicubic'
  config.eval_crop_fraction = size / (size + _CROP_PADDING)
  config.augment = 'autoaugment'
  config.randaugment_magnitude = _RANDAUGMENT_MAGNITUDE.get(variant, 10.0)
  config.batch_size = 2048
  config.eval_batch_size = 1024
  config.num_epochs = 350.0
  config.warmup_epochs = 5.0
  config.optimizer = 'rmsprop'
  config.learning_rate = 0.016
  config.momentum = 0.9
  config.rmsprop_decay = 0.9
  config.rmsprop_epsilon = 1e-3
  config.schedule = 'exponential'
  config.lr_decay_rate = 0.97
  config.lr_decay_epochs = 2.4
  config.weight_decay = 1e-5
  config.label_smoothing = 0.1
  config.ema_decay = 0.9999
  config.lock()
  return config
