"""Reference torch models for the conversion tests; import them from here."""

from jaxcnn import torch_import

torchvision = torch_import.import_torchvision()
timm = torch_import.import_timm()
