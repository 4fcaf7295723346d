"""The PyTorch peer of benchmarks/train_throughput.py.

The same network from torchvision, timm or effdet, batch, resolution, loss and
optimizer as a jaxcnn recipe, trained on synthetic data already on the device
with `channels_last`, bf16 autocast for the bf16 run and `torch.compile` (the
model's forward and backward; the optimizer runs eagerly with its `foreach`
kernels) when it compiles, else eagerly. EfficientDet trains with effdet's
`DetBenchTrain` (its anchor labeler and loss, eager, around the compiled
network) on the jaxcnn task's own dummy batch, and effdet's post-processing
of the network's eval outputs is timed too.
"""

import dataclasses
import statistics
import time
from typing import Any, Callable

import ml_collections
import torch

from jaxcnn import effdet_import
from jaxcnn import models
from jaxcnn import optim
from jaxcnn import tasks
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


def import_effdet() -> Any:
  """effdet, which imports torchvision: so through `import_torchvision`."""
  torch_import.import_torchvision()
  import effdet  # pylint: disable=g-import-not-at-top
  return effdet


# EfficientDet fields that effdet's config also has, so the peer mirrors
# them; and those that do not change the network.
_EFFDET_MIRRORED = {'fpn_channels': 'fpn_channels',
                    'fpn_repeats': 'fpn_cell_repeats',
                    'head_repeats': 'box_class_repeats'}
_EFFDET_IGNORED = ('num_classes', 'lowering', 'dtype', 'param_dtype',
                   'parent', 'name')


def _flag_value(value: Any) -> str:
  return value if isinstance(value, str) else repr(value)


def _efficientdet(config: ml_collections.ConfigDict,
                  module: Any) -> tuple[str, Any]:
  """effdet's `tf_efficientdet_d*` (TF SAME padding, the default) or its own
  `efficientdet_d*` (symmetric padding, as effdet_import's 'effdet_torch'),
  with the recipe's image size, post-processing sizes and FPN/head widths
  and depths; other fields must be the variant's."""
  name = config.model
  source = 'effdet' if module.padding == 'same' else 'effdet_torch'
  effdet_name = name.removeprefix('efficientdet_')
  effdet_name = ('tf_efficientdet_' if source == 'effdet'
                 else 'efficientdet_') + effdet_name
  effdet = import_effdet()
  if effdet_name not in effdet.config.model_config.efficientdet_model_param_dict:
    raise PeerUnavailable(f'effdet has no {effdet_name} (padding '
                          f'{module.padding!r}): compare with the default '
                          "padding='same' (tf_efficientdet_*)")
  variant = models.create(name, num_classes=module.num_classes,
                          **effdet_import.model_kwargs(source))
  extras = [f'--model_kwarg={f.name}={_flag_value(getattr(variant, f.name))}'
            for f in dataclasses.fields(module)
            if f.name not in (*_EFFDET_MIRRORED, *_EFFDET_IGNORED)
            and getattr(module, f.name) != getattr(variant, f.name)]
  if extras:
    raise PeerUnavailable(f"effdet's {effdet_name} is the variant's network: "
                          f"compare with {' '.join(extras)}")

  def build(num_classes: int) -> torch.nn.Module:
    effdet_config = effdet.get_efficientdet_config(effdet_name)
    effdet_config.update(
        num_classes=num_classes,
        image_size=(config.image_size, config.image_size),
        max_detection_points=config.max_candidates,
        max_det_per_image=config.max_detections,
        **{theirs: getattr(module, ours)
           for ours, theirs in _EFFDET_MIRRORED.items()})
    return effdet.EfficientDet(effdet_config, pretrained_backbone=False)
  return f'effdet {effdet_name}', build


def reference(config: ml_collections.ConfigDict,
              num_classes: int) -> tuple[str, Any]:
  """(library and name, `build(num_classes) -> torch.nn.Module`) of the
  recipe's network.

  Raises PeerUnavailable for models with no torchvision/timm/effdet
  counterpart.
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
  if name.startswith('efficientdet_'):
    return _efficientdet(config, models.from_config(config, num_classes))
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


def _is_detection(config: ml_collections.ConfigDict) -> bool:
  return config.task == 'detection'


def _loss_fn(config: ml_collections.ConfigDict, module: torch.nn.Module,
             model: torch.nn.Module, dev: torch.device) -> Callable[..., Any]:
  """loss(images, targets) of `model` (`module`, maybe compiled): effdet's
  bench for detection (its loss reads the config effdet's model carries),
  else cross-entropy with the recipe's label smoothing."""
  if _is_detection(config):
    bench = import_effdet().DetBenchTrain(module).to(dev)
    bench.model = model
    return lambda images, targets: bench(images, targets)['loss']
  cross_entropy = torch.nn.CrossEntropyLoss(
      label_smoothing=config.label_smoothing)
  return lambda images, labels: cross_entropy(model(images), labels)


def _train_step(config: ml_collections.ConfigDict, module: torch.nn.Module,
                loss_fn: Callable[..., Any], bf16: bool, dev: torch.device):
  """step(images, targets) -> loss: one update (gradients clipped as the
  recipe's), plus EMA as in the recipe."""
  tx = optimizer(config, module)
  ema = None
  if config.ema_decay > 0:
    ema = torch.optim.swa_utils.AveragedModel(
        module, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
            config.ema_decay), use_buffers=True)

  def step(images, targets):
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
      loss = loss_fn(images, targets)
    tx.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip_norm:
      torch.nn.utils.clip_grad_norm_(module.parameters(),
                                     config.grad_clip_norm, foreach=True)
    tx.step()
    if ema is not None:
      ema.update_parameters(module)
    return loss
  return step


def _synthetic_batch(config: ml_collections.ConfigDict, batch: int,
                     num_classes: int, dev: torch.device) -> tuple[Any, Any]:
  """(images, targets) on `dev`: for detection the jaxcnn task's own dummy
  batch as effdet's loader gives it (yxyx pixel boxes, classes from 1,
  padding -1); else random images and labels."""
  size = config.image_size
  if not _is_detection(config):
    images = torch.randn(batch, 3, size, size, device=dev)
    labels = torch.randint(0, num_classes, (batch,), device=dev)
    return images.to(memory_format=torch.channels_last), labels
  config = config.copy_and_resolve_references()
  config.num_classes = num_classes
  task = tasks.create(config)
  data = task.dummy_batch(task.model({}), batch, size)
  images = torch.from_numpy(data['image']).permute(0, 3, 1, 2).to(dev)
  classes = torch.from_numpy(data['classes'] + 1).float()
  classes[torch.from_numpy(data['box_valid']) == 0] = -1
  targets = {'bbox': torch.from_numpy(data['boxes']).to(dev),
             'cls': classes.to(dev)}
  return images.contiguous(memory_format=torch.channels_last), targets


def postprocess_seconds(module: torch.nn.Module, images: torch.Tensor,
                        repeats: int, bf16: bool, dev: torch.device) -> float:
  """Median seconds of effdet's post-processing (top-k candidates, then
  per-image batched NMS) of `module`'s eval outputs on `images` (under bf16
  autocast with `bf16`, as jaxcnn's bf16 outputs), after one untimed call.

  Raises PeerUnavailable where torchvision's NMS has no kernel for `dev`.
  """
  effdet = import_effdet()
  dispatch_key = 'CUDA' if dev.type == 'cuda' else 'CPU'
  if not torch._C._dispatch_has_kernel_for_dispatch_key(  # pylint: disable=protected-access
      'torchvision::nms', dispatch_key):
    raise PeerUnavailable(
        f"torchvision's compiled NMS does not load against torch "
        f'{torch.__version__} on {dispatch_key} (see jaxcnn/torch_import.py): '
        "effdet's post-processing cannot run")
  bench = effdet.DetBenchPredict(module).to(dev)
  module.eval()
  with torch.no_grad():
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
      class_out, box_out = module(images)

    def postprocess():
      class_top, box_top, indices, classes = effdet.bench._post_process(
          class_out, box_out, num_levels=bench.num_levels,
          num_classes=bench.num_classes,
          max_detection_points=bench.max_detection_points)
      return effdet.bench._batch_detection(
          images.shape[0], class_top, box_top, bench.anchors.boxes, indices,
          classes, max_det_per_image=bench.max_det_per_image,
          soft_nms=bench.soft_nms)
    times = []
    for _ in range(repeats + 1):
      start = time.perf_counter()
      postprocess()
      _synchronize(dev)
      times.append(time.perf_counter() - start)
  module.train()
  return statistics.median(times[1:])


def _timed_steps(step, images, targets, steps: int, warmup: int,
                 dev: torch.device) -> tuple[float, list[float], float]:
  """The first call's time, the times of `steps` calls after `warmup` more,
  and the last loss."""
  start = time.perf_counter()
  step(images, targets)
  _synchronize(dev)
  first = time.perf_counter() - start
  for _ in range(warmup):
    step(images, targets)
  _synchronize(dev)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    loss = step(images, targets)
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
  images, targets = _synthetic_batch(config, batch, num_classes, dev)
  if dev.type == 'cuda':
    torch.cuda.reset_peak_memory_stats(dev)
  result = {'peer_model': name,
            'parameters': sum(p.numel() for p in module.parameters()),
            'peer_device': str(dev), 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads()}
  timed = None
  if compile_mode != 'off':
    step = _train_step(
        config, module, _loss_fn(config, module, torch.compile(module), dev),
        config.half_precision, dev)
    try:
      timed = _timed_steps(step, images, targets, steps, warmup, dev)
      result['peer_mode'] = 'compiled'
    except Exception as e:  # pylint: disable=broad-except
      if compile_mode == 'on':
        raise
      first_line = (str(e).strip().splitlines() or [''])[0]
      result['peer_note'] = ('torch.compile failed, ran eagerly: '
                             f'{type(e).__name__}: {first_line}')
  if timed is None:
    step = _train_step(config, module, _loss_fn(config, module, module, dev),
                       config.half_precision, dev)
    timed = _timed_steps(step, images, targets, steps, warmup, dev)
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
  if _is_detection(config):
    try:
      result['postprocess_s'] = postprocess_seconds(
          module, images, steps, config.half_precision, dev)
    except PeerUnavailable as e:
      result['postprocess_skipped'] = str(e)
  return result

