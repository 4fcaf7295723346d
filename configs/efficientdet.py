"""The official EfficientDet COCO recipe (google/automl `efficientdet/
hparams_config.py` and the paper), shared by efficientdet_d0.py ... d7x.py,
and the detection fields every detection config has.

SGD with momentum 0.9 (automl's MomentumOptimizer: not Nesterov), lr 0.08
per 64 images (the paper's 0.16 at batch 128) after a 1-epoch linear warmup,
then cosine decay; weight decay 4e-5 as an L2 loss on kernels (automl's
`reg_l2loss`: no BatchNorm, no biases); gradients clipped to norm 10; EMA
0.9998; 300 epochs (D7/D7x: 600); no label smoothing. Augmentation:
horizontal flip and scale jitter 0.1-2.0, then crop/pad to the image size
(automl's `jitter_min`/`jitter_max`). Losses: focal (alpha 0.25, gamma 1.5)
plus 50 x Huber (delta 0.1) (`box_loss_weight`). Up to 100 boxes per image
(`max_instances_per_image`); eval: top 5000 candidates, hard NMS at IoU 0.5,
100 detections (`nms_configs`; soft-NMS optional). automl's warmup starts
at lr 0.008, ours at 0.

COCO labels are in its 90-id space (class = category id - 1), the space of
the official weights: num_classes 90.
"""

import ml_collections

from configs import base
from jaxcnn.models import efficientdet

# Per 64 images (automl's batch), at the paper's global batch 128.
_LEARNING_RATE = 0.08
_LR_BATCH_SIZE = 64
_LONG_SCHEDULE = ('efficientdet_d7', 'efficientdet_d7x')


def add_detection_fields(config: ml_collections.ConfigDict) -> None:
  """The fields of the detection task (jaxcnn/tasks/detection.py), with
  automl's values."""
  config.task = 'detection'
  config.max_boxes = 100  # Ground truth per image; more are dropped.
  # Training images are scaled by a factor drawn from [jitter_min,
  # jitter_max], then cropped or padded to image_size.
  config.jitter_min = 0.1
  config.jitter_max = 2.0
  config.anchor_scale = -1.0  # -1: the model's (4; D7's 5).
  config.box_loss_weight = 50.0
  config.max_candidates = 5000  # Top (anchor, class) scores NMS considers.
  config.max_detections = 100
  config.nms_iou_threshold = 0.5  # Hard NMS.
  # 'hard', or 'soft': Gaussian soft-NMS (effdet's soft_nms=True), which
  # decays overlapping scores by exp(-IoU**2 / soft_nms_sigma).
  config.nms_method = 'hard'
  config.soft_nms_sigma = 0.5
  config.label_smoothing = 0.0
  config.random_flip = True


def get_config(model: str) -> ml_collections.ConfigDict:
  config = base.get_config()
  add_detection_fields(config)
  config.model = model
  config.dataset = 'coco/2017'
  config.image_size = efficientdet.IMAGE_SIZES[model]
  config.batch_size = 128
  config.eval_batch_size = 64
  config.num_epochs = 600.0 if model in _LONG_SCHEDULE else 300.0
  config.warmup_epochs = 1.0
  config.optimizer = 'sgd'
  config.learning_rate = _LEARNING_RATE
  config.lr_batch_size = _LR_BATCH_SIZE
  config.momentum = 0.9
  config.nesterov = False
  config.schedule = 'cosine'
  config.weight_decay = 4e-5
  config.weight_decay_mode = 'l2'
  config.grad_clip_norm = 10.0
  config.ema_decay = 0.9998
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.lock()
  return config
