"""NASNet-A Mobile (4 @ 1056) on ImageNet, TF-slim's recipe (paper top-1
74.0%).

Sources (slim `nets/nasnet/nasnet.py` comments and `mobile_imagenet_config`,
`nasnet_mobile_arg_scope`): batch 32 x 50 replicas = 1600, lr 0.04 x 50 = 2.0
at that batch, x0.97 every 2.4 epochs, label smoothing 0.1, gradient clip 10,
weight decay 4e-5, dropout 0.5 (dense keep 0.5), drop path keep 1.0 (none),
auxiliary head loss weight 0.4 (the head is built with aux_head=True; the
training step must add its loss). Optimizer: slim's train_image_classifier
default RMSProp (decay 0.9, momentum 0.9, eps 1.0). Epoch count: not in slim's
comments; 312 epochs is an assumption. Eval: 224 crop of 0.875.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model = 'nasnet_mobile'
  config.dataset = 'imagenet2012'
  config.image_size = 224
  config.model_kwargs.aux_head = True
  config.model_kwargs.drop_path_rate = 0.0
  config.batch_size = 1600
  config.num_epochs = 312.0
  config.warmup_epochs = 0.0
  config.optimizer = 'rmsprop'
  config.learning_rate = 2.0
  config.lr_batch_size = 1600
  config.momentum = 0.9
  config.rmsprop_decay = 0.9
  config.rmsprop_epsilon = 1.0
  config.schedule = 'exponential'
  config.lr_decay_rate = 0.97
  config.lr_decay_epochs = 2.4
  config.weight_decay = 4e-5
  config.label_smoothing = 0.1
  config.grad_clip_norm = 10.0
  config.lock()
  return config
