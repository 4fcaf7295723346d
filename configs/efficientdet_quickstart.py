"""EfficientDet-D0 on the embedded `digits_detection` dataset (1-4 of
scikit-learn's digits, 12-48 px high, on 128-px canvases; prepared offline
in seconds): a detector trained from scratch on a CPU.

The detection fields of the COCO recipe (configs/efficientdet.py), changed
where this data and a short run need it: 128-px inputs and levels 3-5 (the digits' sizes; D0's
levels 6 and 7 would be 2x2 and 1x1 maps here), anchors of half the size
(`anchor_scale` 2: 16 px on level 3), no flips (a mirrored digit is another
digit), mild scale jitter, no drop path in the backbone, and AdamW, which
trains a detector from scratch in a thousand steps where the recipe's SGD
takes many epochs.
"""

from configs import base
from configs import efficientdet


def get_config():
  config = base.get_config()
  efficientdet.add_detection_fields(config)
  config.model = 'efficientdet_d0'
  config.dataset = 'digits_detection'
  config.image_size = 128
  # At 128 px levels 6 and 7 would be 2x2 and 1x1 maps, whose BatchNorm
  # statistics over a small batch are noise.
  config.model_kwargs.max_level = 5
  config.model_kwargs.backbone_kwargs = {'drop_connect_rate': 0.0}
  config.anchor_scale = 2.0
  config.random_flip = False
  config.jitter_min = 0.8
  config.jitter_max = 1.2
  config.max_boxes = 4  # digits_detection has at most 4 per canvas.
  config.shuffle_buffer = 2000
  config.batch_size = 16
  config.eval_batch_size = 50
  config.num_steps = 1000
  config.warmup_steps = 50
  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 250
  config.optimizer = 'adamw'
  config.learning_rate = 2e-3
  config.lr_batch_size = 16
  config.weight_decay = 1e-4
  config.weight_decay_mode = 'decoupled'
  config.grad_clip_norm = 10.0
  config.lock()
  return config
