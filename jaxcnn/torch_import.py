"""Imports torchvision (and timm) where its compiled ops do not load.

Importing this module imports no torch; only calling its functions does.
"""

import sys
from types import ModuleType

# Op definitions live as long as their torch.library.Library object.
_LIBRARIES = []


def import_torchvision() -> ModuleType:
  """torchvision, with its pure-Python models usable.

  torchvision's compiled ops may not load against the installed torch (a CPU
  build of another release); its import then fails registering fake kernels
  for ops the extension would have defined. Defining their schemas first lets
  the models import (the detection ops themselves stay unavailable).
  """
  import torch  # pylint: disable=g-import-not-at-top
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
  except RuntimeError:
    for module in [m for m in sys.modules if m.startswith('torchvision')]:
      del sys.modules[module]
    library = torch.library.Library('torchvision', 'DEF')
    for op in ('nms', 'qnms'):
      library.define(f'{op}(Tensor dets, Tensor scores, float iou_threshold) '
                     '-> Tensor')
    _LIBRARIES.append(library)
    import torchvision  # pylint: disable=g-import-not-at-top
  return torchvision


def import_timm() -> ModuleType:
  """timm, which imports torchvision: so through `import_torchvision`."""
  import_torchvision()
  import timm  # pylint: disable=g-import-not-at-top
  return timm
