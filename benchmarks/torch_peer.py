"""The PyTorch peer of benchmarks/train_throughput.py.

The same network from torchvision or timm, batch, resolution, loss and
optimizer as a jaxcnn recipe, trained on synthetic data already on the device
with `channels_last`, bf16 autocast for the bf16 run and `torch.compile` (the
model's forward and backward; the optimizer runs eagerly with its `foreach`
kernels) when it compiles, else eagerly.
"""

import statistics
import time
from typing import Any

import ml_collections
import torch

from jaxcnn import models
from jaxcnn import optim
from jaxcnn import torch_import


class PeerUnavailable(Exception):
  """There is no torch reference for this model or device."""


def _torchvision(name: str, **kwargs: Any) -> tuple[str, Any]:
  return f'torchvision {name}', lambda num_classes: getattr(
      torch_import.import_torchvision().models, name)(
          num_classes=num_classes, **kwargs)


def _efficientnet(name: str, fields: dict[str, Any]) -> tuple[str, Any]:
  """timm's TF port for TF SAME padding (the default), else torchvision's."""
  if fields['padding'] == 'same':
    return f'timm tf_{name}', lambda num_classes: (
        torch_import.import_timm().create_model(
            f'tf_{name}', num_classes=num_classes,
            drop_rate=fields['dropout_rate'],
            drop_path_rate=fields['drop_connect_rate']))
  return _torchvision(name, dropout=fields['dropout_rate'],
                      stochastic_depth_prob=fields['drop_connect_rate'])


def _nasnet_large(module: Any) -> tuple[str, Any]:
  """timm's `nasnetalarge`, which has neither an auxiliary head nor drop
  path: only the network without them is the same."""
  extras = [f'--model_kwarg={field}={off}'
            for field, off in (('aux_head', False), ('drop_path_rate', 0.0),
                               ('padding', 'timm'))
            if getattr(module, field) != off]
  if extras:
    raise PeerUnavailable(
        "timm's nasnetalarge has no auxiliary head or drop path and pads as "
        f"'timm': compare with {' '.join(extras)}")
  return 'timm nasnetalarge', lambda num_classes: (
      torch_import.import_timm().create_model(
          'nasnetalarge', num_classes=num_classes,
          drop_rate=module.dropout_rate))


def reference(config: ml_collections.ConfigDict,
              num_classes: int) -> tuple[str, Any]:
  """(library and name, `build(num_classes) -> torch.nn.Module`) of the
  recipe's network.

  Raises PeerUnavailable for models with no torchvision/timm counterpart.
  """
  name = config.model
  if name.startswith(('resnet', 'squeezenet')) or name == 'alexnet':
    return _torchvision(name)
  if name.startswith('efficientnet_'):
    module = models.from_config(config, num_classes)
    return _efficientnet(name, {f: getattr(module, f) for f in (
        'padding', 'dropout_rate', 'drop_connect_rate')})
  if name == 'nasnet_large':
    return _nasnet_large(models.from_config(config, num_classes))
  raise PeerUnavailable(f'no torchvision/timm reference for {name!r}')


def device(jax_platform: str) -> torch.device:
  """The torch device matching JAX's platform ('cpu', 'gpu')."""
  if jax_platform == 'cpu':
    return torch.device('cpu')
  if jax_platform == 'gpu' and torch.cuda.is_available():
    return torch.device('cuda')
  raise PeerUnavailable(f'this torch ({torch.__version__}) cannot run on the '
                        f'JAX device ({jax_platform})')


def optimizer(config: ml_collections.ConfigDict,
              model: torch.nn.Module) -> torch.optim.Optimizer:
  """The recipe's optimizer at its peak rate; weight decay, as in jaxcnn,
  only on weights with ndim > 1 (not on BatchNorm parameters or biases)."""
  params = list(model.parameters())
  groups = [{'params': [p for p in params if p.ndim > 1],
             'weight_decay': config.weight_decay},
            {'params': [p for p in params if p.ndim <= 1],
             'weight_decay': 0.0}]
  lr = optim.peak_learning_rate(config)
  if config.optimizer == 'sgd':
    return torch.optim.SGD(groups, lr, momentum=config.momentum,
                           nesterov=config.nesterov and config.momentum > 0,
                           foreach=True)
  if config.optimizer == 'rmsprop':
    # torch puts eps outside the square root; the work is the same.
    return torch.optim.RMSprop(groups, lr, alpha=config.rmsprop_decay,
                               eps=config.rmsprop_epsilon,
                               momentum=config.momentum, foreach=True)
  return torch.optim.AdamW(groups, lr, betas=(config.adam_b1, config.adam_b2),
                           foreach=True)


def _synchronize(dev: torch.device) -> None:
  if dev.type == 'cuda':
    torch.cuda.synchronize(dev)


def _train_step(config: ml_collections.ConfigDict, module: torch.nn.Module,
                model: torch.nn.Module, bf16: bool, dev: torch.device):
  """step(images, labels) -> loss: one update, plus EMA as in the recipe."""
  tx = optimizer(config, module)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
  ema = None
  if config.ema_decay > 0:
    ema = torch.optim.swa_utils.AveragedModel(
        module, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
            config.ema_decay), use_buffers=True)

  def step(images, labels):
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
      loss = loss_fn(model(images), labels)
    tx.zero_grad(set_to_none=True)
    loss.backward()
    tx.step()
    if ema is not None:
      ema.update_parameters(module)
    return loss
  return step


def _timed_steps(step, images, labels, steps: int, warmup: int,
                 dev: torch.device) -> tuple[float, list[float], float]:
  """The first call's time, the times of `steps` calls after `warmup` more,
  and the last loss."""
  start = time.perf_counter()
  step(images, labels)
  _synchronize(dev)
  first = time.perf_counter() - start
  for _ in range(warmup):
    step(images, labels)
  _synchronize(dev)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    loss = step(images, labels)
    _synchronize(dev)
    times.append(time.perf_counter() - start)
  return first, times, loss.item()


def measure(config: ml_collections.ConfigDict, batch: int, steps: int,
            warmup: int, *, num_classes: int = 1000, jax_platform: str = 'cpu',
            compile_mode: str = 'auto') -> dict[str, Any]:
  """The peer's median step time on `jax_platform`'s device.

  compile_mode: 'auto' tries torch.compile and falls back to eager (saying
  why in `peer_note`), 'on' requires it, 'off' runs eagerly.
  """
  name, build = reference(config, num_classes)
  dev = device(jax_platform)
  # JAX's default float32 matmuls and convs may use TF32; let torch too.
  torch.set_float32_matmul_precision('high')
  # Fixed shapes: pick the fastest cuDNN kernels, as XLA's autotuning does.
  torch.backends.cudnn.benchmark = True
  torch.manual_seed(0)
  module = build(num_classes).to(dev, memory_format=torch.channels_last)
  module.train()
  size = config.image_size
  images = torch.randn(batch, 3, size, size, device=dev).to(
      memory_format=torch.channels_last)
  labels = torch.randint(0, num_classes, (batch,), device=dev)
  if dev.type == 'cuda':
    torch.cuda.reset_peak_memory_stats(dev)
  result = {'peer_model': name,
            'parameters': sum(p.numel() for p in module.parameters()),
            'peer_device': str(dev), 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads()}
  timed = None
  if compile_mode != 'off':
    step = _train_step(config, module, torch.compile(module),
                       config.half_precision, dev)
    try:
      timed = _timed_steps(step, images, labels, steps, warmup, dev)
      result['peer_mode'] = 'compiled'
    except Exception as e:  # pylint: disable=broad-except
      if compile_mode == 'on':
        raise
      first_line = (str(e).strip().splitlines() or [''])[0]
      result['peer_note'] = ('torch.compile failed, ran eagerly: '
                             f'{type(e).__name__}: {first_line}')
  if timed is None:
    step = _train_step(config, module, module, config.half_precision, dev)
    timed = _timed_steps(step, images, labels, steps, warmup, dev)
    result['peer_mode'] = 'eager'
  first, times, loss = timed
  step_s = statistics.median(times)
  result.update(
      first_step_s=first, step_s=step_s, images_per_s=batch / step_s,
      loss=loss,
      peak_memory_bytes=(torch.cuda.max_memory_allocated(dev)
                         if dev.type == 'cuda' else None),
      memory_source=('torch.cuda.max_memory_allocated' if dev.type == 'cuda'
                     else 'not measured: torch keeps no CPU allocator stats'))
  return result

