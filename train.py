"""Train and evaluate a CNN: python train.py --config=configs/X.py --workdir=DIR.

Any config field can be overridden: --config.batch_size=256.
"""

import contextlib
import json
import logging as std_logging
import os
import re
import signal
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Recipe file in configs/, e.g. configs/quickstart.py.',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Checkpoints, metrics and config go here.')
flags.DEFINE_string('coordinator_address', '',
                    'host:port of process 0 for a multi-process run.')
flags.DEFINE_integer('num_processes', 0, 'Processes of a multi-process run.')
flags.DEFINE_integer('process_id', -1, 'This process in a multi-process run.')
flags.DEFINE_bool('distributed', False,
                  'Let JAX detect the cluster (TPU VM pod slices, SLURM).')
flags.DEFINE_integer('distributed_timeout', 300,
                     'Seconds to wait for every process to join.')
flags.mark_flags_as_required(['config', 'workdir'])

DETERMINISTIC_XLA_FLAG = '--xla_gpu_deterministic_ops=true'


def with_deterministic_flag(xla_flags: str) -> str:
  """XLA_FLAGS plus the one that makes GPU reductions and convolutions
  deterministic (CPUs and TPUs already are)."""
  if DETERMINISTIC_XLA_FLAG in xla_flags.split():
    return xla_flags
  return f'{xla_flags} {DETERMINISTIC_XLA_FLAG}'.strip()


def _quiet_libraries(record) -> bool:
  """Keeps the INFO chatter of orbax and tfds out of the training log."""
  noisy = any(lib in record.pathname
              for lib in ('orbax', 'tensorflow_datasets'))
  return not noisy or record.levelno >= std_logging.WARNING


def _one_line(text: str) -> str:
  return ' '.join(str(text).split())


class _ConfigFileError(Exception):
  """The --config file could not be loaded (not a flag value error)."""


class _ConfigFileParser(flags.ArgumentParser):
  """ml_collections' parser of --config, raising _ConfigFileError with one
  line when the file is missing, does not compile or its get_config fails."""

  def __init__(self, parser: flags.ArgumentParser):
    self._parser = parser

  def parse(self, argument: str):
    path = argument.split(':', 1)[0]  # 'file.py:arg' passes arg to get_config.
    verbosity = logging.get_verbosity()
    # ml_collections logs a warning of its own when get_config returns None.
    logging.set_verbosity(logging.ERROR)
    try:
      config = self._parser.parse(argument)
    except Exception as e:  # Whatever the recipe raises.
      while e.__context__ is not None:  # ml_collections re-raises some.
        e = e.__context__
      raise _ConfigFileError(f'--config={argument}: {_describe(e, path)}')
    finally:
      logging.set_verbosity(verbosity)
    if not isinstance(config, ml_collections.ConfigDict):
      # ml_collections defers an unreadable file's error to the first use.
      reason = ('no such file' if not os.path.exists(path) else
                'is a directory' if os.path.isdir(path) else
                'cannot be read' if not os.access(path, os.R_OK) else
                'get_config() did not return a ConfigDict')
      raise _ConfigFileError(f'--config={argument}: {reason}')
    return config

  def flag_type(self) -> str:
    return self._parser.flag_type()


def _describe(error: BaseException, path: str) -> str:
  """'Error: message (line N)', the line of `path` that raised it."""
  if isinstance(error, SyntaxError):
    return f'{type(error).__name__}: {error.msg} (line {error.lineno})'
  if isinstance(error, AttributeError) and error.name == 'get_config':
    return 'defines no get_config()'
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  where = f' (line {lines[-1]})' if lines else ''
  return f'{type(error).__name__}: {_one_line(error)}{where}'


FLAGS['config'].parser = _ConfigFileParser(FLAGS['config'].parser)


def _flag_problems(argv: list[str]) -> list[str]:
  """What is wrong with the command line outside --config, one item each."""
  problems = []
  if len(argv) > 1:
    problems.append(f'unexpected arguments: {" ".join(argv[1:])}')
  coordinator = (FLAGS.coordinator_address or
                 os.environ.get('JAX_COORDINATOR_ADDRESS', ''))
  if coordinator and not re.fullmatch(r'\S+:\d+', coordinator):
    problems.append(f'--coordinator_address={coordinator}: must be HOST:PORT')
  if FLAGS.num_processes < 0:
    problems.append(f'--num_processes={FLAGS.num_processes}: must be a '
                    'non-negative integer')
  if FLAGS.process_id < -1 or 0 < FLAGS.num_processes <= FLAGS.process_id:
    problems.append(f'--process_id={FLAGS.process_id}: must be in [0, '
                    '--num_processes)')
  given = [f'--{name}={FLAGS[name].value}' for name, unset in
           (('num_processes', 0), ('process_id', -1))
           if FLAGS[name].value != unset]
  if given and not coordinator:
    problems.append(f'{" and ".join(given)}: need --coordinator_address='
                    'HOST:PORT (or JAX_COORDINATOR_ADDRESS)')
  if FLAGS.distributed_timeout <= 0:
    problems.append(f'--distributed_timeout={FLAGS.distributed_timeout}: '
                    'must be a positive number of seconds')
  return problems


def main(argv):
  # Imported here so that --help is fast; it imports neither JAX nor TF.
  from jaxcnn import config_check
  from jaxcnn import workdir as workdir_lib
  problems = _flag_problems(argv)
  # The processes of one multi-process run share a workdir whose lock
  # process 0 takes; JAX tells which process this is only once it starts.
  single = not (FLAGS.num_processes > 1 or FLAGS.distributed or
                FLAGS.coordinator_address or
                os.environ.get('JAX_COORDINATOR_ADDRESS'))
  try:  # Writable, not another run's, not in use by a live one.
    workdir_lib.check(FLAGS.workdir,
                      json.loads(FLAGS.config.to_json_best_effort()),
                      lock=single)
  except ValueError as e:
    problems.append(_one_line(e).rstrip('.'))
  # Before TensorFlow is imported: a bad value costs a second, not ten.
  problems += config_check.problems(FLAGS.config, workdir=FLAGS.workdir)
  if problems:
    sys.exit(f'FATAL {"; ".join(problems)}')
  if FLAGS.config.deterministic:
    # Read when JAX starts its backend.
    os.environ['XLA_FLAGS'] = with_deterministic_flag(
        os.environ.get('XLA_FLAGS', ''))
  from jaxcnn import distributed
  import jax
  with _one_line_errors(ValueError):
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id, FLAGS.distributed_timeout,
                           auto=FLAGS.distributed)
    config_check.check(FLAGS.config, jax.device_count(), jax.process_count(),
                       FLAGS.workdir)
  from jaxcnn import trainer
  from jaxcnn.data import datasets
  import tensorflow as tf

  # tf.data must not take the accelerators JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  # Every process computes the same metrics: process 0 logs for all of them.
  logging.set_verbosity(logging.INFO if jax.process_index() == 0
                        else logging.WARNING)
  logging.get_absl_handler().addFilter(_quiet_libraries)
  # Mistakes in the command line and diverged runs: one line, no traceback.
  with _one_line_errors(ValueError, datasets.DatasetNotPreparedError,
                        FileNotFoundError, FloatingPointError):
    try:
      trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except trainer.Preempted as e:
      # 128 + the signal, what a shell reports for a process it ended (143
      # for SIGTERM, 130 for Ctrl-C): schedulers and wrappers read it as
      # "terminated, requeue", not as a failed run.
      sys.exit(128 + e.signum)
    except KeyboardInterrupt:
      # A second Ctrl-C, or one before the first step.
      print('FATAL Interrupted before a checkpoint was saved.',
            file=sys.stderr)
      sys.exit(128 + signal.SIGINT)


@contextlib.contextmanager
def _one_line_errors(*errors: type[Exception]):
  """Exits with 'FATAL <message>' on one line for any of `errors`."""
  try:
    yield
  except errors as e:
    sys.exit(f'FATAL {_one_line(e)}')


def _parse_flags(argv):
  """absl's parser, with one line (no usage) for any error in the flags."""
  try:
    return FLAGS(argv)
  except _ConfigFileError as e:
    sys.exit(f'FATAL {e}')
  except flags.Error as e:
    # A wrong type or a missing required flag.
    sys.exit(f'FATAL Flags parsing error: {_one_line(e)}')
  except (AttributeError, KeyError) as e:
    # ml_collections reports an unknown --config.field as one of these.
    text = str(e)
    field = re.search(r"'([\w.]+)", text)
    message = f'unknown config field {field.group(1) if field else text}'
    suggestion = re.search(r'Did you mean \"?([\w.]+)', text)
    if suggestion:
      message += f' (did you mean {suggestion.group(1)}?)'
    sys.exit(f'FATAL Flags parsing error: {message}.')


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
