"""TensorFlow and tensorboardX without the packages they import at start-up
for features no run uses: TensorFlow imports Keras (2-3 s where Keras 3 is
installed, to register its optimizers for SavedModel loading, which tf.data
input pipelines never do) and tensorboardX imports PyTorch (2-3 s where it is
installed, to accept torch tensors; runs log floats). Every train.py, sweep
run and search child starts faster without them; programs that use Keras or
PyTorch themselves import them as usual.

  from jaxcnn.imports import tensorflow as tf
  from jaxcnn.imports import tensorboardX
"""

import importlib
import sys
import types

# Module -> the package it imports only in case a program uses it.
_UNUSED = {'tensorflow': 'keras', 'tensorboardX': 'torch'}


def import_without(name: str, unused: str) -> types.ModuleType:
  """Imports module `name` while `unused` cannot be imported, where `name`
  takes a failed import of `unused` for its absence. `unused` imports as
  usual afterwards; if it is already imported, nothing is hidden."""
  if name in sys.modules or unused in sys.modules:
    return importlib.import_module(name)
  sys.modules[unused] = None  # `import unused` raises ImportError.
  try:
    return importlib.import_module(name)
  finally:
    del sys.modules[unused]


def __getattr__(name: str) -> types.ModuleType:
  if name not in _UNUSED:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  return import_without(name, _UNUSED[name])
