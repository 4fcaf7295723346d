"""Run a sweep: python sweep.py --config=configs/sweeps/X.py --workdir=DIR.

Every setting x seed of the sweep config (format: jaxcnn/sweep.py) is a
train.py run in DIR/<run name>, --parallel at a time. Rerunning the command
skips finished runs and resumes the others. DIR/summary.csv and
DIR/summary.md gather the final eval metrics.
"""

import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from jaxcnn import sweep

FLAGS = flags.FLAGS
flags.DEFINE_string(
    'config', None, 'Sweep config, e.g. configs/sweeps/quickstart_seeds.py.')
flags.DEFINE_string('workdir', None, 'One subdirectory per run, and summaries.')
flags.DEFINE_integer('parallel', 1, 'Runs at a time.')
flags.DEFINE_string('data_dir', None,
                    'Passed to every run as --config.data_dir (not part of '
                    "the sweep's identity).")
flags.mark_flags_as_required(['config', 'workdir'])

TRAIN_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.parallel < 1:
    raise app.UsageError(f'--parallel={FLAGS.parallel} must be at least 1.')
  logging.set_verbosity(logging.INFO)
  workdir = os.path.abspath(FLAGS.workdir)
  try:
    config = sweep.load_sweep(FLAGS.config)
    runs = sweep.expand(config)
    sweep.check_workdir(workdir, config)
  except sweep.SweepConfigError as e:
    sys.exit(f'FATAL {e}')
  # A SystemExit, so that the running train.py get SIGTERM in turn (they
  # checkpoint) instead of running on without the sweep.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  results = sweep.run_sweep(config, runs, workdir, TRAIN_PY, FLAGS.parallel,
                            FLAGS.data_dir)
  sweep.write_summary(workdir, config, results)
  failed = [r for r in results if r.status != 'done']
  summary = os.path.join(workdir, sweep.SUMMARY_MD)
  if failed:
    names = ', '.join(f'{r.run.name} (exit {r.exit_code})' for r in failed)
    sys.exit(f'FATAL {len(failed)} of {len(results)} runs failed: {names}. '
             f'See {summary}; rerun the same command to retry them.')
  logging.info('All %d runs done: %s', len(results), summary)


if __name__ == '__main__':
  app.run(main)
