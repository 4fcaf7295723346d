"""Fine-tune an ImageNet ResNet-18 on the embedded digits dataset.

  python -m jaxcnn.convert --model=resnet18 --source=torchvision \
      --weights=resnet18-f37072fd.pth --out=/tmp/resnet18_tv
  python train.py --config=configs/finetune_digits.py --workdir=/tmp/ft \
      --config.init_from=/tmp/resnet18_tv

The 1000-class head is replaced by a fresh 10-class one; the stem and the
first stage stay frozen (parameters, and BatchNorm layers whole: they
normalise with their stored statistics, see jaxcnn/freeze.py).
"""

from configs import quickstart


def get_config():
  config = quickstart.get_config()
  config.unlock()
  config.model = 'resnet18'
  config.image_size = 64
  config.crop_padding = 4
  config.num_epochs = 5.0
  config.learning_rate = 0.01
  config.weight_decay = 1e-4
  config.freeze = r'^(conv1|bn1|layer1_)'
  # Not the quickstart's XLA convolutions: ResNet-18's 2x2 and 1x1 maps at
  # 64 px run 5-7x faster as im2col on CPU (benchmarks/RESULTS.md).
  config.lowering.small_output_conv = 'auto'
  config.eval_every_epochs = 5.0
  config.lock()
  return config
