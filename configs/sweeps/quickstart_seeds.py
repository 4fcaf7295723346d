"""The quickstart (LeNet-5 on digits) at 2 learning rates x 5 seeds.

python sweep.py --config=configs/sweeps/quickstart_seeds.py \
  --workdir=/tmp/quickstart_seeds --parallel=2
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.base = 'configs/quickstart.py'
  config.seeds = [0, 1, 2, 3, 4]
  config.grid = {'learning_rate': [0.05, 0.1]}
  config.runs = []
  config.overrides = {}
  return config
