"""TF-slim's NASNet-A ImageNet recipe, shared by nasnet_mobile.py and
nasnet_large.py.

Sources (slim `nets/nasnet/nasnet.py` comments, `mobile_imagenet_config` /
`large_imagenet_config`, the arg scopes): global batch 1600 (Mobile 32 x 50
replicas, Large 16 x 100), x0.97 every 2.4 epochs, label smoothing 0.1,
gradient clip 10, dropout 0.5 (dense keep 0.5), auxiliary head with loss
weight 0.4 (`aux_loss_weight`). Optimizer: slim's train_image_classifier
default RMSProp (decay 0.9, momentum 0.9, eps 1.0). Epoch count: not in
slim's comments; 312 epochs is an assumption. Eval: centre crop 0.875.
"""

import ml_collections

from configs import base


def imagenet_config(model: str, image_size: int, num_cells: int,
                    filters: int, drop_path_rate: float, learning_rate: float,
                    weight_decay: float) -> ml_collections.ConfigDict:
  config = base.get_config()
  config.model = model
  config.dataset = 'imagenet2012'
  config.image_size = image_size
  # A GENOTYPES name or a genotype string, e.g. nas.py's best.json's.
  config.model_kwargs.genotype = 'nasnet_a'
  # The model's N @ penultimate width (N, F), listed to be overridable.
  config.model_kwargs.num_cells = num_cells
  config.model_kwargs.filters = filters
  config.model_kwargs.aux_head = True
  config.model_kwargs.drop_path_rate = drop_path_rate
  config.batch_size = 1600
  config.num_epochs = 312.0
  config.warmup_epochs = 0.0
  config.optimizer = 'rmsprop'
  config.learning_rate = learning_rate
  config.lr_batch_size = 1600
  config.momentum = 0.9
  config.rmsprop_decay = 0.9
  config.rmsprop_epsilon = 1.0
  config.schedule = 'exponential'
  config.lr_decay_rate = 0.97
  config.lr_decay_epochs = 2.4
  config.weight_decay = weight_decay
  config.label_smoothing = 0.1
  config.grad_clip_norm = 10.0
  config.lock()
  return config
