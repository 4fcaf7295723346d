"""Reference torch models for the conversion tests; import them from here."""

from jaxcnn import torch_import

torchvision = torch_import.import_torchvision()
timm = torch_import.import_timm()


def randomize_batch_norm(model):
  """Random BatchNorm statistics and affine parameters, in place (a fresh
  reference's mean 0 / var 1 would hide statistics read wrongly)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.normal_(1, 0.1)
        module.bias.normal_(0, 0.1)
  return model
