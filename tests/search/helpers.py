"""Tiny searches for the tests: one-block cells, 8 px digits, 2 steps per
child."""

import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
TINY = {'num_blocks': 1, 'child.image_size': 8, 'child.num_steps': 2,
        'child.batch_size': 16, 'child.lr_batch_size': 16,
        'child.eval_batch_size': 300, 'child.model_kwargs.filters': 4,
        'child.model_kwargs.stem_filters': 8}
TINY_CHILDREN = [f'--config.{field}={value}' for field, value in TINY.items()]
CHEAP_OPS = '--config.ops=id,avg3,max3'


def apply(config, overrides: dict, **fields) -> None:
  """Sets `overrides` ({'a.b': value}) and `fields` on the locked config."""
  for path, value in {**overrides, **fields}.items():
    *parents, name = path.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value


def nas_command(workdir, compilation_cache, *overrides, parallel=1,
                config='configs/nas/digits_evolution.py'):
  """The nas.py command line for a tiny digits search in `workdir`."""
  return [sys.executable, os.path.join(REPO, 'nas.py'), f'--config={config}',
          f'--workdir={workdir}', f'--parallel={parallel}', *TINY_CHILDREN,
          f'--config.compilation_cache_dir={compilation_cache}', *overrides]


def run_nas(command, timeout=600) -> subprocess.CompletedProcess:
  """Runs `command`; on a timeout its workers are killed with it."""
  with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True,
                        start_new_session=True) as process:
    try:
      stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
      raise
  return subprocess.CompletedProcess(command, process.returncode, stdout,
                                     stderr)
