"""Regularized evolution on CIFAR-10 at the paper's proportions, scaled to
one machine: P=50, S=10, 1000 children of N=2 cells at F=16 trained 5
epochs at 32 px (the paper: P=100, S=25, 20k children of N=3, F=24 trained
25 epochs). For GPUs or a Ray cluster: python nas.py
--config=configs/nas/cifar10_evolution.py --workdir=DIR --executor=ray
--ray_address=HOST:PORT --parallel=K --config.child.data_dir=TFDS_DIR"""

from configs.nas import search


def get_config():
  child = search.child_config('cifar10', image_size=32, num_cells=2,
                              filters=16, num_epochs=5.0)
  child.train_crop = 'pad_and_crop'
  child.batch_size = 128
  child.lr_batch_size = 128
  config = search.search_config('evolution', child)
  config.population_size = 50
  config.sample_size = 10
  config.num_children = 1000
  config.lock()
  return config
