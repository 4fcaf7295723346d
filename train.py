"""Train and evaluate a CNN: python train.py --config=configs/X.py --workdir=DIR.

Any config field can be overridden: --config.batch_size=256.
"""

import logging as std_logging
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
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

# 128 + SIGTERM, what a shell reports for a process SIGTERM ended: schedulers
# and wrappers read it as "terminated, requeue", not as a failed run.
PREEMPTED_EXIT_CODE = 143
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.config.deterministic:
    # Read when JAX starts its backend, which the imports below may do.
    os.environ['XLA_FLAGS'] = with_deterministic_flag(
        os.environ.get('XLA_FLAGS', ''))
  # Imported here so that --help is fast and errors in flags come first.
  from jaxcnn import distributed
  from jaxcnn import trainer
  from jaxcnn.data import datasets
  import jax
  import tensorflow as tf

  # tf.data must not take the accelerators JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                         FLAGS.process_id, FLAGS.distributed_timeout,
                         auto=FLAGS.distributed)
  # Every process computes the same metrics: process 0 logs for all of them.
  logging.set_verbosity(logging.INFO if jax.process_index() == 0
                        else logging.WARNING)
  logging.get_absl_handler().addFilter(_quiet_libraries)
  try:
    trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, datasets.DatasetNotPreparedError,
          FileNotFoundError) as e:
    # Mistakes in the command line: one clear line, no traceback.
    raise app.UsageError(str(e)) from None
  except FloatingPointError as e:
    sys.exit(f'FATAL {e}')
  except trainer.Preempted:
    sys.exit(PREEMPTED_EXIT_CODE)


def _parse_flags(argv):
  """absl's parser, with a one-line error for a misspelt config field."""
  try:
    return app.parse_flags_with_usage(argv)
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
