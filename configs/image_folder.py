"""ResNet-18 on your own images, from scratch:

  python train.py --config=configs/image_folder.py --workdir=/tmp/mine \
      --config.data_dir=DIR

DIR/train/<class>/* are the training images (JPEG/PNG, any sizes), and
DIR/val/<class>/* the evaluation ones; without val/, 10% of each class is
held out (--config.val_fraction). To fine-tune converted ImageNet weights
instead (README, Pretrained weights), add --config.init_from=CONVERTED and
--config.learning_rate=0.01.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model = 'resnet18'
  config.dataset = 'image_folder'
  config.image_size = 128
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 30.0
  config.warmup_epochs = 1.0
  config.log_every_steps = 20
  config.checkpoint_every_steps = 500
  config.learning_rate = 0.1  # Per 256 images: 0.025 at batch 64.
  config.lock()
  return config
