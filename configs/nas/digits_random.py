"""Random search with digits_evolution.py's budget, space and children:
python nas.py --config=configs/nas/digits_random.py --workdir=/tmp/nas/random
(progress.png then shows both searches of /tmp/nas side by side)."""

from configs.nas import digits_evolution
from configs.nas import search


def get_config():
  config = search.search_config('random', digits_evolution.digits_child())
  config.lock()
  return config
