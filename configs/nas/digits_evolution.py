"""Regularized evolution on the embedded digits (13 to 22 minutes on a
2-core CPU with --parallel=2): python nas.py
--config=configs/nas/digits_evolution.py --workdir=/tmp/nas/evolution"""

from configs.nas import search


def digits_child():
  child = search.child_config('digits', image_size=16, num_cells=1,
                              filters=8, num_epochs=3.0)
  child.train_crop = 'pad_and_crop'
  child.crop_padding = 2
  child.random_flip = False  # Mirrored digits are other digits.
  child.shuffle_buffer = 2048
  return child


def get_config():
  config = search.search_config('evolution', digits_child())
  config.lock()
  return config
