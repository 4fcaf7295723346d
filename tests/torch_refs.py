"""Reference torch models for the conversion tests; import them from here."""

import sys

import torch

try:
  import torchvision
except RuntimeError:
  # torchvision's compiled ops may not load against the installed torch (a
  # CPU build of another release); its import then fails registering fake
  # kernels for ops the extension would have defined. Defining their schemas
  # lets the pure-Python models import.
  for _module in [m for m in sys.modules if m.startswith('torchvision')]:
    del sys.modules[_module]
  _LIB = torch.library.Library('torchvision', 'DEF')
  for _op in ('nms', 'qnms'):
    _LIB.define(f'{_op}(Tensor dets, Tensor scores, float iou_threshold) '
                '-> Tensor')
  import torchvision

import timm  # noqa: E402,F401  pylint: disable=g-import-not-at-top
