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
  # 1x1 convolutions (layers.conv_lowering): 'auto', 'conv', 'matmul'.
  config.model_kwargs.pointwise = 'auto'
  config.image_size = 64
  config.crop_padding = 4
  config.num_epochs = 5.0
  config.learning_rate = 0.01
  config.weight_decay = 1e-4
  config.freeze = r'^(conv1|bn1|layer1_)'
  config.eval_every_epochs = 5.0
  config.lock()
  return config
