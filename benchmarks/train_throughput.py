"""Train-step speed of a jaxcnn model and of its PyTorch peer, same device.

  python -m benchmarks.train_throughput --model=resnet50 --batch=256 --steps=50

Uses the model's recipe from configs/ (optimizer at its peak learning rate,
weight decay, EMA, label smoothing) and the real jitted train step on synthetic
data already on the device. Per dtype (float32, bfloat16) it reports compile
time, the median step time and images/s over the timed steps (after warm-up,
device synchronised), peak device memory, the step's FLOPs from XLA's cost
analysis of the step before optimisation (lowered for the CPU), and the model
FLOP utilisation (MFU): achieved FLOP/s over the device's peak, measured by
timing chained square matmuls in the same dtype (n = 8192 on accelerators, 1024
on CPU). Then the same network, batch, resolution and optimizer in
torchvision/timm/effdet (benchmarks/torch_peer.py) and the ratio jaxcnn /
peer. For detection it also times the post-processing of the model's eval
outputs for the batch (top-k candidates and NMS), jaxcnn's jitted
`task.detect` and effdet's.

Each measurement runs in a fresh process (--isolate) so its peak memory is its
own and neither framework holds device memory while the other runs. Imports
no TensorFlow.
"""

import ast
import concurrent.futures
import datetime
import functools
import importlib
import importlib.metadata
import multiprocessing
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Iterator, NamedTuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import optax

from benchmarks import report as report_lib
from jaxcnn import optim
from jaxcnn import sharding
from jaxcnn import state as state_lib
from jaxcnn import step as step_lib
from jaxcnn import tasks
from jaxcnn.models import lowering

DTYPES = ('float32', 'bfloat16')

FLAGS = flags.FLAGS


def define_model_flags() -> None:
  """The flags that pick the model and recipe (shared with profile_step)."""
  flags.DEFINE_string('model', 'resnet50', 'Registered model name.')
  flags.DEFINE_string('recipe', '', 'Config module in configs/ (default: the '
                      "model's own recipe if there is one, else base).")
  flags.DEFINE_multi_string(
      'model_kwarg', [], 'Model field NAME=VALUE (a Python literal, else a '
      'string), e.g. width=1.5; repeat for more.')
  flags.DEFINE_multi_string(
      'lowering', [], "KIND=CHOICE of the recipe's lowering (what 'auto' "
      'picks on this platform otherwise; jaxcnn/models/lowering.py), e.g. '
      'max_pool_backward=xla; repeat for more.')
  flags.DEFINE_integer('batch', 256, 'Global batch size.')
  flags.DEFINE_integer('image_size', 0, "Default: the recipe's image size.")
  flags.DEFINE_integer('num_classes', 0, "Classifier outputs (0: 1000, or a "
                       "detection recipe's dataset's: COCO's 90).")


def _define_flags() -> None:
  """Only when run as a script: the module is also a library."""
  define_model_flags()
  flags.DEFINE_integer('steps', 20, 'Timed steps.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_enum('dtype', 'both', ('both', *DTYPES),
                    'Compute dtype (bfloat16: bf16 compute, float32 weights; '
                    'the peer uses bf16 autocast).')
  flags.DEFINE_enum('peer', 'torch', ('torch', 'none'),
                    'Reference to compare with.')
  flags.DEFINE_enum('peer_compile', 'auto', ('auto', 'on', 'off'),
                    'torch.compile the peer: auto falls back to eager.')
  flags.DEFINE_bool('isolate', True, 'Run each measurement in a new process.')
  flags.DEFINE_string('json_out', '', 'Also write the report here as JSON.')


def _name_value_pairs(flag: str, items: list[str]) -> Iterator[tuple[str,
                                                                     str]]:
  for item in items:
    name, sep, value = item.partition('=')
    if not sep or not name:
      raise app.UsageError(f'--{flag}={item!r} is not NAME=VALUE.')
    yield name, value


def parse_model_kwargs(items: list[str]) -> dict[str, Any]:
  """{'width': 1.5, 'padding': 'same'} from ['width=1.5', ...]."""
  kwargs = {}
  for name, value in _name_value_pairs('model_kwarg', items):
    try:
      kwargs[name] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      kwargs[name] = value
  return kwargs


def parse_lowering(items: list[str]) -> dict[str, str]:
  """{'max_pool_backward': 'xla'} from ['max_pool_backward=xla'], checked
  against lowering.CHOICES."""
  overrides = dict(_name_value_pairs('lowering', items))
  for kind, choice in overrides.items():
    choices = lowering.CHOICES.get(kind, ())
    if choice not in choices:
      raise app.UsageError(
          f'--lowering={kind}={choice}: KIND is one of '
          f'{", ".join(lowering.CHOICES)}, CHOICE one of its '
          f'{", ".join(choices) or "choices"}.')
  return overrides


def config_from_flags() -> tuple[ml_collections.ConfigDict, str]:
  """The recipe the model flags name, with their overrides applied."""
  config, recipe = load_recipe(FLAGS.model, FLAGS.recipe)
  if FLAGS.image_size:
    config.image_size = FLAGS.image_size
  config.model_kwargs.update(parse_model_kwargs(FLAGS.model_kwarg))
  config.lowering.update(parse_lowering(FLAGS.lowering))
  return config, recipe


def default_num_classes(config: ml_collections.ConfigDict) -> int:
  """1000 (ImageNet's), or a detection recipe's own (its dataset's)."""
  if config.task == 'detection':
    return tasks.create(config).num_classes
  return 1000


def load_recipe(model: str,
                recipe: str) -> tuple[ml_collections.ConfigDict, str]:
  """The config of `recipe` (default: the model's own, else base) for
  `model`, unlocked."""
  configs_dir = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                             'configs')
  name = recipe or (model if os.path.exists(
      os.path.join(configs_dir, f'{model}.py')) else 'base')
  config = importlib.import_module(f'configs.{name}').get_config()
  config.unlock()
  config.model = model
  return config, name


def step_flops(stage: Any) -> float:
  """FLOPs of one call by XLA's cost analysis of a jax Lowered or Compiled
  stage (a dict, a list with one dict per computation in older jax, or None
  where unavailable)."""
  analysis = stage.cost_analysis()
  if isinstance(analysis, dict):
    analysis = [analysis]
  return float(sum(a.get('flops', 0.0) for a in analysis or []))


def model_flops(config: ml_collections.ConfigDict, batch: int,
                num_classes: int = 1000) -> float:
  """FLOPs of the train step of `config` by XLA's cost analysis of the
  unoptimised program lowered for the CPU (the GPU's analysis counts no
  convolutions), with XLA's own lowering of every layer: the network's
  count, the same on every platform, as im2col matmuls and taps also count
  the padding that XLA's convolutions skip. Abstract: nothing is allocated."""
  config = config.copy_and_resolve_references()
  config.lowering.update(lowering.XLA.as_dict())
  train_step = build_train_step(config, batch, num_classes, abstract=True)
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  specs = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu),
      (train_step.state, train_step.data))
  return step_flops(jax.jit(train_step.step_fn).lower(*specs))


def peak_memory(compiled: Any, device: jax.Device) -> tuple[int, str]:
  """Peak device memory in bytes, and where the figure comes from."""
  stats = device.memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device.memory_stats()'
  # CPU keeps no allocator statistics: the executable's own buffers.
  memory = compiled.memory_analysis()
  return (memory.argument_size_in_bytes + memory.output_size_in_bytes -
          memory.alias_size_in_bytes + memory.temp_size_in_bytes,
          'compiled.memory_analysis(): arguments + outputs - donated + temp')


def call_seconds(fn: Callable[..., Any], args: tuple,
                 repeats: int) -> list[float]:
  """Seconds of each of `repeats` synchronised calls of `fn(*args)`, after
  one that compiles and warms up."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return times


def measured_peak_flops(dtype: Any, size: int = 0, chain: int = 8,
                        repeats: int = 5) -> tuple[float, str]:
  """FLOP/s of the fastest of `repeats` runs of `chain` dependent `size`^2
  matmuls in `dtype` on the default device (size 0: 8192, or 1024 on CPU),
  and that description."""
  size = size or (1024 if jax.devices()[0].platform == 'cpu' else 8192)
  x_key, w_key = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(x_key, (size, size), dtype)
  # Unit-variance columns keep the chained products' scale constant.
  w = jax.random.normal(w_key, (size, size), dtype) * size**-0.5
  matmuls = jax.jit(
      lambda x, w: jax.lax.fori_loop(0, chain, lambda _, y: y @ w, x))
  best = min(call_seconds(matmuls, (x, w), repeats))
  return (2 * size**3 * chain / best,
          f'fastest of {repeats} runs of {chain} chained {size}x{size} '
          f'{jnp.dtype(dtype).name} matmuls')


class TrainStep(NamedTuple):
  """The recipe's jitted train step, its inputs, the unjitted step, the
  model's lowering on this platform (as a run's), the task and the model."""
  jitted: Any
  step_fn: Callable[..., Any]
  state: Any
  data: dict[str, jax.Array]
  lowering: lowering.Lowering
  task: tasks.Task
  model: Any


def build_train_step(config: ml_collections.ConfigDict, batch: int,
                     num_classes: int = 1000,
                     abstract: bool = False) -> TrainStep:
  """The run's own train step (`step.make_train_step`: its task's loss,
  freezing and non-finite handling included) of `config` on synthetic data
  already on device (with `abstract`, its state only as shapes);
  `num_classes` 0: `default_num_classes`."""
  config = config.copy_and_resolve_references()
  config.num_classes = num_classes or default_num_classes(config)
  task = tasks.create(config)
  model = task.model({})
  shape = (config.image_size, config.image_size, model.in_channels)
  mesh = sharding.create_mesh()
  # The peer's constant peak rate: the recipe's warm-up from 0 would leave a
  # benchmark's few steps untrained, and the two last losses incomparable.
  schedule = optax.constant_schedule(optim.peak_learning_rate(config))
  tx = optim.create_optimizer(config, schedule)
  init = functools.partial(state_lib.initial_variables, model,
                           image_shape=shape)

  def make_state(variables):
    return state_lib.create(model, tx, variables, config.ema_decay > 0)

  if abstract:
    state = jax.eval_shape(lambda: make_state(init(state_lib.init_key(0))))
  else:
    state = make_state(jax.jit(init)(state_lib.init_key(0)))
  state_sharding = sharding.state_shardings(mesh, state)
  if not abstract:
    state = jax.device_put(state, state_sharding)
  data = sharding.global_batch(
      task.dummy_batch(model, batch, config.image_size),
      sharding.batch_sharding(mesh))
  jitted = step_lib.make_train_step(config, task, model, schedule, mesh,
                                    state_sharding, total_steps=0)
  return TrainStep(jitted, jitted.__wrapped__, state, data, model.lowering,
                   task, model)


def median_step(compiled: Any, state: Any, data: dict[str, jax.Array],
                steps: int, warmup: int) -> tuple[Any, Any, float]:
  """Runs `warmup` then `steps` timed steps, each waited for; the last state
  and metrics, and the median step time in seconds."""
  for _ in range(warmup):
    state, _ = compiled(state, data)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, data)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return state, metrics, statistics.median(times)


def postprocess_seconds(train_step: TrainStep, state: Any,
                        repeats: int) -> float:
  """Median seconds of the jitted `task.detect` (top-k candidates, batched
  NMS) of the model's eval outputs for the step's batch, after a compiling
  call."""
  model = train_step.model
  outputs = jax.jit(functools.partial(model.apply, train=False))(
      state.variables(), train_step.data['image'])
  detect = jax.jit(train_step.task.detect)
  return statistics.median(call_seconds(detect, (outputs,), repeats))


def measure(config: ml_collections.ConfigDict, batch: int, steps: int,
            warmup: int, num_classes: int = 1000) -> dict[str, Any]:
  """Compile time, median step time, FLOPs and memory of the real step;
  for detection, the post-processing time of the batch."""
  train_step = build_train_step(config, batch, num_classes)
  state, data = train_step.state, train_step.data
  start = time.perf_counter()
  compiled = train_step.jitted.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  state, metrics, step_s = median_step(compiled, state, data, steps, warmup)
  memory, memory_source = peak_memory(compiled, jax.devices()[0])
  postprocess = ({'postprocess_s': postprocess_seconds(train_step, state,
                                                       steps)}
                 if config.task == 'detection' else {})
  return {'parameters': sum(p.size for p in jax.tree.leaves(state.params)),
          'compile_s': compile_s, 'step_s': step_s,
          'images_per_s': batch / step_s,
          'flops_per_step': model_flops(config, batch, num_classes),
          'lowering': train_step.lowering.as_dict(),
          'peak_memory_bytes': memory, 'memory_source': memory_source,
          'loss': float(metrics['loss']), **postprocess}


def utilisation(flops_per_step: float, step_s: float,
                peak_flops_per_s: float) -> dict[str, float]:
  achieved = flops_per_step / step_s
  return {'achieved_flops_per_s': achieved, 'mfu': achieved / peak_flops_per_s}


def _jax_run(config: ml_collections.ConfigDict, batch: int, steps: int,
             warmup: int, num_classes: int) -> dict[str, Any]:
  """measure() with the device, its measured peak and the MFU."""
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  peak, peak_matmul = measured_peak_flops(dtype)
  result = measure(config, batch, steps, warmup, num_classes)
  device = jax.devices()[0]
  return {**result, 'peak_flops_per_s': peak, 'peak_matmul': peak_matmul,
          **utilisation(result['flops_per_step'], result['step_s'], peak),
          'platform': device.platform,
          'device': f'{device.platform}: {device.device_kind}',
          'devices': jax.device_count()}


def _torch_run(config: ml_collections.ConfigDict, batch: int, steps: int,
               warmup: int, num_classes: int, jax_platform: str,
               compile_mode: str) -> dict[str, Any]:
  """The torch peer's measurement, or {'skipped': why}."""
  try:
    from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    return {'skipped': f'no peer: {e.name} is not installed (pip install -r '
                       'requirements-dev.txt, or --peer=none)'}
  try:
    return torch_peer.measure(config, batch, steps, warmup,
                              num_classes=num_classes,
                              jax_platform=jax_platform,
                              compile_mode=compile_mode)
  except torch_peer.PeerUnavailable as e:
    return {'skipped': str(e)}


def _call(isolate: bool, fn: Callable[..., dict], *args: Any) -> dict:
  """fn(*args), in a new process if `isolate`."""
  if not isolate:
    return fn(*args)
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
    return pool.submit(fn, *args).result()


def run(config: ml_collections.ConfigDict, dtype: str, batch: int, steps: int,
        warmup: int, *, num_classes: int = 1000, peer: str = 'torch',
        peer_compile: str = 'auto', isolate: bool = True) -> dict[str, Any]:
  """jaxcnn (with `config.lowering`) and (unless peer='none') its torch
  peer in `dtype`, and the ratio of their images/s. The peer's MFU counts
  the jaxcnn step's FLOPs."""
  config = config.copy_and_resolve_references()
  config.half_precision = dtype == 'bfloat16'
  config.batch_size = batch  # The learning rate scales with it.
  ours = _call(isolate, _jax_run, config, batch, steps, warmup, num_classes)
  _progress(f'jaxcnn {dtype}', ours)
  result = {'dtype': dtype, 'jaxcnn': ours}
  if peer == 'none':
    return result
  theirs = _call(isolate, _torch_run, config, batch, steps, warmup,
                 num_classes, ours['platform'], peer_compile)
  _progress(f'torch {dtype}', theirs)
  if 'skipped' not in theirs:
    theirs.update(utilisation(ours['flops_per_step'], theirs['step_s'],
                              ours['peak_flops_per_s']))
    result['ratio'] = ours['images_per_s'] / theirs['images_per_s']
  result['peer'] = theirs
  return result


def _progress(label: str, result: dict[str, Any]) -> None:
  """One line on stderr as each measurement ends: long runs show progress."""
  print(f'{label}: ' + ', '.join(
      f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
      for k, v in result.items()), file=sys.stderr, flush=True)


def _mib(value: int | None) -> str:
  return '-' if value is None else f'{value / 2**20:.0f}'


def table(report: dict[str, Any]) -> str:
  """The report's figures, one line per dtype and framework."""
  lines = ['dtype     who     mode      compile_s  step_ms  images/s  '
           'peak_MiB  GFLOP/step  TFLOP/s  MFU     ratio']
  for row in report['results']:
    flops = row['jaxcnn']['flops_per_step']
    for who, result in (('jaxcnn', row['jaxcnn']), ('torch', row.get('peer'))):
      if result is None:
        continue
      if 'skipped' in result:
        lines.append(f'{row["dtype"]:<9} {who:<7} skipped: {result["skipped"]}')
        continue
      compile_s = result.get('compile_s', result.get('first_step_s'))
      ratio = row.get('ratio') if who == 'jaxcnn' else None
      ratio = '' if ratio is None else f'{ratio:.2f}'
      lines.append(
          f'{row["dtype"]:<9} {who:<7} {result.get("peer_mode", "jit"):<9} '
          f'{compile_s:9.1f}  {result["step_s"] * 1e3:7.1f}  '
          f'{result["images_per_s"]:8.1f}  '
          f'{_mib(result["peak_memory_bytes"]):>8}  {flops / 1e9:10.2f}  '
          f'{result["achieved_flops_per_s"] / 1e12:7.3f}  '
          f'{result["mfu"]:.3f}  {ratio}')
  lines.extend(_postprocess_lines(report))
  lines.append('compile_s: jaxcnn lower + compile; torch: its first step '
               '(compilation included). ratio: jaxcnn / torch images/s.')
  return '\n'.join(lines)


def _postprocess_lines(report: dict[str, Any]) -> list[str]:
  """Per dtype, the post-processing time of a batch by each framework."""
  lines = []
  for row in report['results']:
    if 'postprocess_s' not in row['jaxcnn']:
      continue
    times = [f'jaxcnn {row["jaxcnn"]["postprocess_s"] * 1e3:.1f} ms']
    peer = row.get('peer', {})
    if 'postprocess_s' in peer:
      times.append(f'torch {peer["postprocess_s"] * 1e3:.1f} ms')
    elif 'postprocess_skipped' in peer:
      times.append(f'torch not timed: {peer["postprocess_skipped"]}')
    lines.append(f'{row["dtype"]:<9} post-processing (top-k + NMS) per '
                 f'batch: {", ".join(times)}')
  return lines


def _versions() -> dict[str, str]:
  return {'python': platform.python_version(),
          **{name: importlib.metadata.version(name)
             for name in ('jax', 'jaxlib', 'flax', 'optax')}}


def main(argv):
  del argv
  config, recipe = config_from_flags()
  num_classes = FLAGS.num_classes or default_num_classes(config)
  load_before = os.getloadavg()
  dtypes = DTYPES if FLAGS.dtype == 'both' else (FLAGS.dtype,)
  results = [run(config, dtype, FLAGS.batch, FLAGS.steps, FLAGS.warmup,
                 num_classes=num_classes, peer=FLAGS.peer,
                 peer_compile=FLAGS.peer_compile, isolate=FLAGS.isolate)
             for dtype in dtypes]
  first = results[0]['jaxcnn']
  report = {
      'command': 'python -m benchmarks.train_throughput ' +
                 ' '.join(sys.argv[1:]),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'model': FLAGS.model, 'recipe': recipe,
      'model_kwargs': config.model_kwargs.to_dict(),
      'lowering': config.lowering.to_dict(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'batch': FLAGS.batch,
      'image_size': config.image_size, 'num_classes': num_classes,
      'steps': FLAGS.steps, 'warmup': FLAGS.warmup,
      'device': first['device'], 'devices': first['devices'],
      'cpu': platform.processor() or platform.machine(),
      'cores': os.cpu_count(), 'isolated': FLAGS.isolate,
      # 1-minute load averages: other processes on the host slow the runs.
      'load_average_before_after': [load_before[0], os.getloadavg()[0]],
      **_versions(), 'results': results}
  report_lib.emit(report, FLAGS.json_out)
  print(table(report))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
