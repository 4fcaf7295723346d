"""ResNet-18 (the ImageNet network, unchanged) on CIFAR-10 at 32x32:
pad-4 crop + flip, SGD Nesterov lr 0.1 at batch 128, weight decay 5e-4,
cosine over 100 epochs."""

from configs import base


def get_config():
  config = base.get_config()
  config.model = 'resnet18'
  config.dataset = 'cifar10'
  config.image_size = 32
  config.train_crop = 'pad_and_crop'
  config.eval_crop_fraction = 1.0
  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 100.0
  config.warmup_epochs = 1.0
  config.learning_rate = 0.1
  config.lr_batch_size = 128
  config.weight_decay = 5e-4
  config.label_smoothing = 0.0
  config.checkpoint_every_steps = 2000
  config.lock()
  return config
