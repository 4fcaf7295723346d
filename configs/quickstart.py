"""LeNet-5 on the embedded `digits` dataset: trains in about a minute on a CPU."""

from configs import base


def get_config():
  config = base.get_config()
  config.model = 'lenet5'
  config.dataset = 'digits'
  config.image_size = 32
  config.train_crop = 'pad_and_crop'
  config.crop_padding = 2
  config.random_flip = False  # Mirrored digits are other digits.
  config.eval_crop_fraction = 1.0
  config.shuffle_buffer = 2048
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 30.0
  config.warmup_epochs = 1.0
  config.log_every_steps = 50
  config.eval_every_epochs = 10.0
  config.checkpoint_every_steps = 200
  config.learning_rate = 0.1
  config.lr_batch_size = 64
  config.weight_decay = 5e-4
  config.label_smoothing = 0.0
  # The README's figures are of XLA's convolutions: 'auto' would run
  # LeNet-5's conv3 (5x5 on a 5x5 map) as an im2col matmul on CPU, with
  # other last bits and no measured gain (benchmarks/RESULTS.md, "One
  # lowering policy").
  config.lowering.small_output_conv = 'conv'
  config.lock()
  return config
