"""NASNet-A Large (6 @ 4032) on ImageNet, TF-slim's recipe (paper top-1
82.7%): configs/nasnet.py with lr 0.015 x 100 replicas = 1.5 at batch 1600,
weight decay 5e-5, drop path keep 0.7 (rate 0.3), 331 px.
"""

from configs import nasnet


def get_config():
  return nasnet.imagenet_config('nasnet_large', image_size=331, num_cells=6,
                                filters=168, drop_path_rate=0.3,
                                learning_rate=1.5, weight_decay=5e-5)
