"""SqueezeNet 1.1 on ImageNet, after the paper's solver (lr 0.04, weight decay
2e-4, batch 512) with a cosine instead of a polynomial decay."""

from configs import base


def get_config():
  config = base.get_config()
  config.model = 'squeezenet1_1'
  config.dataset = 'imagenet2012'
  config.batch_size = 512
  config.eval_batch_size = 512
  config.learning_rate = 0.04
  config.nesterov = False
  config.weight_decay = 2e-4
  config.warmup_epochs = 1.0
  config.label_smoothing = 0.0
  config.lock()
  return config
