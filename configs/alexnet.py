"""AlexNet on ImageNet, torchvision's recipe: SGD 0.9, lr 0.01 per 256 images,
x0.1 every 30 epochs, weight decay 1e-4, 90 epochs (top-1 about 56.5%)."""

from configs import base


def get_config():
  config = base.get_config()
  config.model = 'alexnet'
  config.dataset = 'imagenet2012'
  config.batch_size = 256
  config.eval_batch_size = 256
  config.learning_rate = 0.01
  config.nesterov = False
  config.schedule = 'multistep'
  config.lr_boundaries_epochs = (30.0, 60.0)
  config.warmup_epochs = 0.0
  config.label_smoothing = 0.0
  config.lock()
  return config
