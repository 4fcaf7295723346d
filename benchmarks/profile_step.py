"""Where a train step's device time goes, op by op.

  python -m benchmarks.profile_step --model=resnet50 --batch=256

Traces `--steps` calls of the real jitted train step (the one
`benchmarks/train_throughput.py` times) with `jax.profiler`, reads the device
kernels from the trace, and joins each with its instruction in the optimised
HLO: its kind (cuDNN convolution, cuBLAS matmul, elementwise or reduction
fusion, ...), whether it is in the forward or the backward pass, and the
model layer it comes from. Prints the device time per kind and direction,
then the costliest instructions; `--json_out` keeps every instruction and
`--hlo_out` the optimised HLO. Imports no TensorFlow.
"""

import collections
import glob
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Iterator

from absl import app
from absl import flags
import jax

from benchmarks import train_throughput

FLAGS = flags.FLAGS

_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(')
_ATTRIBUTES = {
    'kind': re.compile(r'kind=(\w+)'),
    'target': re.compile(r'custom_call_target="([^"]+)"'),
    'op_name': re.compile(r'op_name="([^"]+)"'),
}
_FUSION_KINDS = {'kLoop': 'elementwise fusion', 'kInput': 'reduction fusion',
                 'kOutput': 'output fusion', 'kCustom': 'custom fusion'}


def _define_flags() -> None:
  """Only when run as a script: the module is also a library."""
  train_throughput.define_model_flags()
  flags.DEFINE_enum('dtype', 'bfloat16', train_throughput.DTYPES,
                    'Compute dtype.')
  flags.DEFINE_integer('steps', 5, 'Traced steps.')
  flags.DEFINE_integer('warmup', 3, 'Untraced steps after compilation.')
  flags.DEFINE_integer('top', 30, 'Instructions listed.')
  flags.DEFINE_string('json_out', '', 'Also write the report here as JSON.')
  flags.DEFINE_string('hlo_out', '', 'Write the optimised HLO here.')


def instructions(hlo_text: str) -> dict[str, dict[str, str]]:
  """Optimised-HLO instruction name -> opcode, fusion kind, custom-call
  target and JAX op_name (where present)."""
  found = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    info = {'opcode': match.group(2)}
    for key, pattern in _ATTRIBUTES.items():
      attribute = pattern.search(line)
      if attribute:
        info[key] = attribute.group(1)
    found[match.group(1)] = info
  return found


def category(info: dict[str, str]) -> str:
  """A readable kind of device work for one HLO instruction."""
  target = info.get('target', '')
  if 'conv' in target:
    return 'convolution (cuDNN)'
  if 'cublas' in target or 'gemm' in target:
    return 'matmul (cuBLAS)'
  if info['opcode'] == 'fusion':
    kind = _FUSION_KINDS.get(info.get('kind', ''), 'fusion')
    if kind == 'custom fusion' and 'conv' in info.get('op_name', ''):
      return 'convolution (fused)'
    return kind
  if info['opcode'] == 'custom-call':
    return f'custom-call {target}'
  return info['opcode']


def direction(op_name: str) -> str:
  """'backward' for autodiff's transposed ops, else 'forward'."""
  return 'backward' if 'transpose(' in op_name else 'forward'


def layer(op_name: str) -> str:
  """The module path inside the model: 'layer1_0/conv1' from a JAX op_name
  such as 'jit(train_step)/transpose(jvp(ResNet))/layer1_0/conv1/conv...'."""
  parts = [p for p in op_name.split('/')[1:] if '(' not in p]
  return '/'.join(parts[:-1]) if len(parts) > 1 else (parts[0] if parts else '')


def device_kernels(xplane_path: str) -> Iterator[tuple[str, str, float]]:
  """(hlo_op, kernel name, seconds) of each device kernel in a trace; on a
  CPU, each XLA thunk on the host."""
  profile = jax.profiler.ProfileData.from_file(xplane_path)
  planes = [p for p in profile.planes if p.name.startswith('/device:')]
  if not planes:
    planes = [p for p in profile.planes if p.name == '/host:CPU']
  for plane in planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if 'hlo_op' in stats:
          yield str(stats['hlo_op']), event.name, event.duration_ns * 1e-9


def profile(config: Any, batch: int, steps: int, warmup: int,
            num_classes: int = 1000) -> dict[str, Any]:
  """Traces `steps` train steps; device time per HLO instruction."""
  train_step = train_throughput.build_train_step(config, batch, num_classes)
  state, data = train_step.state, train_step.data
  compiled = train_step.jitted.lower(state, data).compile()
  state, metrics, step_s = train_throughput.median_step(
      compiled, state, data, steps, warmup)
  ops = collections.defaultdict(lambda: {'seconds': 0.0, 'calls': 0,
                                         'kernels': set()})
  with tempfile.TemporaryDirectory(prefix='jaxcnn_profile_') as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        state, metrics = compiled(state, data)
      jax.block_until_ready((state, metrics))
    wall_s = time.perf_counter() - start
    xplane, = glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True)
    for hlo_op, kernel, seconds in device_kernels(xplane):
      ops[hlo_op]['seconds'] += seconds
      ops[hlo_op]['calls'] += 1
      ops[hlo_op]['kernels'].add(kernel)
  hlo_text = compiled.as_text()
  known = instructions(hlo_text)
  rows = []
  for hlo_op, totals in ops.items():
    info = known.get(hlo_op, {'opcode': 'unknown'})
    op_name = info.get('op_name', '')
    rows.append({
        'hlo_op': hlo_op, 'category': category(info),
        'direction': direction(op_name), 'layer': layer(op_name),
        'op_name': op_name, 'ms_per_step': totals['seconds'] / steps * 1e3,
        'calls_per_step': totals['calls'] / steps,
        'kernels': sorted(totals['kernels'])})
  rows.sort(key=lambda r: -r['ms_per_step'])
  return {'steps': steps, 'step_ms': step_s * 1e3,
          'images_per_s': batch / step_s,
          'wall_ms_per_step': wall_s / steps * 1e3,
          'device_ms_per_step': sum(r['ms_per_step'] for r in rows),
          'ops': rows, 'hlo_text': hlo_text}


def summary(ops: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
  """(category, direction, ms per step, kernels per step), costliest first."""
  totals = collections.defaultdict(lambda: [0.0, 0.0])
  for op in ops:
    key = (op['category'], op['direction'])
    totals[key][0] += op['ms_per_step']
    totals[key][1] += op['calls_per_step']
  return sorted(((c, d, ms, n) for (c, d), (ms, n) in totals.items()),
                key=lambda row: -row[2])


def table(result: dict[str, Any], top: int) -> str:
  """Device time per kind and direction, then the `top` costliest ops."""
  device = result['device_ms_per_step']
  lines = [f'untraced: {result["step_ms"]:.2f} ms/step, '
           f'{result["images_per_s"]:.1f} images/s; traced: '
           f'{result["wall_ms_per_step"]:.2f} ms/step, of which device '
           f'kernels {device:.2f} ms',
           f'{"category":<28} {"direction":<9} {"ms/step":>8} {"share":>6} '
           f'{"kernels":>8}']
  for name, way, ms, calls in summary(result['ops']):
    lines.append(f'{name:<28} {way:<9} {ms:8.3f} {ms / device:6.1%} '
                 f'{calls:8.0f}')
  lines.append('')
  lines.append(f'{"ms/step":>8} {"calls":>5}  {"category":<22} {"dir":<3} '
               'layer / hlo_op')
  for op in result['ops'][:top]:
    lines.append(f'{op["ms_per_step"]:8.3f} {op["calls_per_step"]:5.0f}  '
                 f'{op["category"]:<22} {op["direction"][:3]:<3} '
                 f'{op["layer"] or "-"} / {op["hlo_op"]}')
  return '\n'.join(lines)


def main(argv):
  del argv
  config, recipe = train_throughput.config_from_flags()
  config.half_precision = FLAGS.dtype == 'bfloat16'
  config.batch_size = FLAGS.batch
  result = profile(config, FLAGS.batch, FLAGS.steps, FLAGS.warmup,
                   FLAGS.num_classes)
  hlo_text = result.pop('hlo_text')
  if FLAGS.hlo_out:
    with open(FLAGS.hlo_out, 'w') as f:
      f.write(hlo_text)
  device = jax.devices()[0]
  report = {'command': 'python -m benchmarks.profile_step ' +
                       ' '.join(sys.argv[1:]),
            'model': FLAGS.model, 'recipe': recipe,
            'model_kwargs': config.model_kwargs.to_dict(),
            'lowering': config.lowering.to_dict(),
            'xla_flags': os.environ.get('XLA_FLAGS', ''), 'batch': FLAGS.batch,
            'dtype': FLAGS.dtype, 'device': f'{device.platform}: '
                                            f'{device.device_kind}',
            **result}
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump(report, f, indent=1)
  print(table(report, FLAGS.top))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
