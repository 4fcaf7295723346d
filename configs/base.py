"""Defaults shared by every recipe. A recipe's get_config() starts from here.

Durations come in two units: `X_epochs` (float) or `X_steps` (int); a
non-negative `X_steps` wins over `X_epochs` (-1: use `X_epochs`).
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # What is learnt: 'classification' (jaxcnn/tasks/).
  config.task = 'classification'

  # Model.
  config.model = 'resnet50'
  config.num_classes = -1  # -1: the dataset's class count.
  config.half_precision = False  # bf16 compute, float32 parameters.
  config.model_kwargs = ml_collections.ConfigDict()  # Extra model fields.
  # How the model's layers run (jaxcnn/models/lowering.py): the same
  # function and weights either way. 'auto' is the fastest measured on the
  # platform (benchmarks/RESULTS.md), else XLA's own. A run may resume with
  # other choices (e.g. on another platform).
  config.lowering = ml_collections.ConfigDict(dict(
      depthwise='auto',  # Or 'conv', 'taps', 'pallas' (GPUs).
      pointwise='auto',  # 1x1 convolutions: 'conv' or 'matmul'.
      small_output_conv='auto',  # Outputs smaller than the kernel: 'conv'
                                 # or 'im2col'.
      max_pool_backward='auto'))  # 'xla' or 'taps'.

  # Data.
  config.dataset = 'imagenet2012'
  # tfds data dir: a local path or gs://. For dataset='image_folder', your
  # folder of DIR/train/<class>/* images (and DIR/val/<class>/*).
  config.data_dir = config_dict.placeholder(str)
  config.download = False  # Let tfds download a missing dataset.
  # The part of each class an image folder without val/ holds out to
  # evaluate on: the same files on every run.
  config.val_fraction = 0.1
  config.image_size = 224
  config.train_crop = 'random_resized'  # Or 'pad_and_crop', 'resize'.
  config.crop_padding = 4  # For 'pad_and_crop'.
  config.random_flip = True
  config.interpolation = 'bilinear'
  config.eval_crop_fraction = 0.875
  config.augment = 'none'  # Or 'randaugment', 'autoaugment'.
  config.randaugment_num_layers = 2
  config.randaugment_magnitude = 10.0
  config.cutout_size = 0  # Side of the square zeroed in train images; 0: off.
  config.shuffle_buffer = 16_384
  # The train split is read as this many disjoint, separately shuffled shards
  # that fill equal parts of every batch, each process reading an equal share
  # of them. -1: one per process. A fixed count gives the same batches on any
  # number of processes that divides it.
  config.data_shards = -1

  # Durations.
  config.batch_size = 1024  # Global, over all devices and processes.
  # Each step runs its batch as this many microbatches in sequence, with one
  # update of their mean gradient: less memory, the same steps and schedule.
  # BatchNorm normalises each microbatch by its own statistics and updates
  # its running ones once per microbatch (jaxcnn/step.py). batch_size must
  # divide into them, each divisible by the device count.
  config.grad_accum_steps = 1
  config.eval_batch_size = 1024
  config.num_epochs = 90.0
  config.num_steps = -1
  config.warmup_epochs = 5.0
  config.warmup_steps = -1
  config.log_every_steps = 100
  config.eval_every_epochs = 1.0
  config.eval_every_steps = -1
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3  # At least 1.

  # Optimisation.
  config.optimizer = 'sgd'  # Or 'rmsprop' (TF-style), 'adamw'.
  config.learning_rate = 0.1  # Per `lr_batch_size` images.
  config.lr_batch_size = 256  # Scale lr linearly with batch_size; 0: don't.
  config.momentum = 0.9
  config.nesterov = True
  config.rmsprop_decay = 0.9
  config.rmsprop_epsilon = 1e-3
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.schedule = 'cosine'  # Or 'exponential', 'multistep', 'constant'.
  config.lr_decay_rate = 0.1  # 'exponential' and 'multistep' factor.
  config.lr_decay_epochs = 2.4  # 'exponential' (staircase) period.
  config.lr_boundaries_epochs = (30.0, 60.0, 80.0)  # 'multistep'.
  config.weight_decay = 1e-4  # Never on BatchNorm parameters or biases.
  config.weight_decay_mode = 'l2'  # In the loss; or 'decoupled'.
  config.label_smoothing = 0.1
  # Mixup / CutMix of the training batches (classification, on device, one
  # draw per batch): the mixing weight is drawn from Beta(alpha, alpha); 0
  # turns each off. A batch is mixed with probability mixup_prob; with both
  # alphas positive, it is CutMix with probability mixup_switch_prob.
  config.mixup_alpha = 0.0
  config.cutmix_alpha = 0.0
  config.mixup_prob = 1.0
  config.mixup_switch_prob = 0.5
  # Weight of the auxiliary head's loss, for models that have one (NASNet's
  # aux_head=True).
  config.aux_loss_weight = 0.4
  config.grad_clip_norm = 0.0  # 0: no clipping.
  config.ema_decay = 0.0  # 0: no EMA; else EMA weights are also evaluated.
  # Regex on parameter paths ('layer1_0/bn1/scale') to keep fixed, their
  # BatchNorm statistics included; '' trains everything.
  config.freeze = ''

  # Run.
  config.seed = 0  # In [0, 2**27).
  config.init_from = config_dict.placeholder(str)  # Checkpoint to start from.
  config.progress_bar = True
  config.deterministic = False  # Deterministic (slower) GPU kernels.
  # A step with a non-finite loss, gradient or update: 'halt' stops the run
  # naming it; 'skip' keeps the weights (counted in train/skipped_steps).
  config.on_nonfinite = 'halt'
  return config
