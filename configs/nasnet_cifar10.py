"""NASNet-A (6 @ 768) on CIFAR-10, TF-slim's CIFAR recipe (paper: 2.65%
test error with cutout).

Sources (slim `nets/nasnet/nasnet.py` comments, `cifar_config`,
`nasnet_cifar_arg_scope`): batch 32, lr 0.025 cosine (one period), 600
epochs, gradient clip 5, weight decay 5e-4, auxiliary head (loss weight 0.4,
`aux_loss_weight`), drop path keep 0.6 (rate 0.4, ramped linearly over the
run), BatchNorm decay 0.9 / eps 1e-5 (the model's defaults), no dropout,
cutout 16. Momentum SGD 0.9 (slim's CIFAR trainer).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model = 'nasnet_cifar'
  config.dataset = 'cifar10'
  # A GENOTYPES name or a genotype string, e.g. nas.py's best.json's.
  config.model_kwargs.genotype = 'nasnet_a'
  config.model_kwargs.num_cells = 6  # N @ penultimate width 768: (N, F).
  config.model_kwargs.filters = 32
  config.model_kwargs.aux_head = True
  config.model_kwargs.drop_path_rate = 0.4
  config.image_size = 32
  config.train_crop = 'pad_and_crop'
  config.eval_crop_fraction = 1.0
  config.cutout_size = 16
  config.batch_size = 32
  config.eval_batch_size = 500
  config.num_epochs = 600.0
  config.warmup_epochs = 0.0
  config.optimizer = 'sgd'
  config.nesterov = False
  config.momentum = 0.9
  config.learning_rate = 0.025
  config.lr_batch_size = 32
  config.schedule = 'cosine'
  config.weight_decay = 5e-4
  config.label_smoothing = 0.0
  config.grad_clip_norm = 5.0
  config.checkpoint_every_steps = 5000
  config.lock()
  return config
