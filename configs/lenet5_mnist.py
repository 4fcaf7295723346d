"""LeNet-5 on MNIST; the 28x28 digits are resized to LeNet's 32x32 input."""

from configs import quickstart


def get_config():
  config = quickstart.get_config()
  config.unlock()
  config.dataset = 'mnist'
  config.num_epochs = 10.0
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.lr_batch_size = 128
  config.eval_every_epochs = 1.0
  config.checkpoint_every_steps = 1000
  config.shuffle_buffer = 60_000
  config.lock()
  return config
