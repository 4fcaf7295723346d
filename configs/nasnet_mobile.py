"""NASNet-A Mobile (4 @ 1056) on ImageNet, TF-slim's recipe (paper top-1
74.0%): configs/nasnet.py with lr 0.04 x 50 replicas = 2.0 at batch 1600,
weight decay 4e-5, no drop path (keep 1.0), 224 px.
"""

from configs import nasnet


def get_config():
  return nasnet.imagenet_config('nasnet_mobile', image_size=224, num_cells=4,
                                filters=44, drop_path_rate=0.0,
                                learning_rate=2.0, weight_decay=4e-5)
