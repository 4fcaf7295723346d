"""The recipes in configs/: the modules whose get_config takes no argument.

base.py and a family's shared module (efficientnet.py's get_config takes a
variant, nasnet.py has none) are what recipes are built on, not recipes.
"""

import glob
import importlib
import inspect
import os

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs')


def _is_recipe(name: str) -> bool:
  get_config = getattr(importlib.import_module(f'configs.{name}'),
                       'get_config', None)
  return (name != 'base' and get_config is not None and
          not inspect.signature(get_config).parameters)


NAMES = sorted(name for name in (
    os.path.basename(p)[:-3] for p in glob.glob(f'{_CONFIG_DIR}/*.py'))
               if not name.startswith('_') and _is_recipe(name))
