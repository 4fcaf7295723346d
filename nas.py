"""Architecture search: python nas.py --config=configs/nas/X.py --workdir=DIR.

Regularized evolution (or random search) over the NASNet cell space; every
child is a training run (jaxcnn/search/). Rerunning the same command on the
same workdir resumes the search. Any config field can be overridden, the
children's train config too: --config.num_children=100,
--config.child.num_epochs=5.
"""

import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Search config, e.g. configs/nas/digits_evolution.py.',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'search.json, history.jsonl, best.json, '
                    'summary.md, progress.png and children/ go here.')
flags.DEFINE_integer('parallel', 1, 'Children trained at a time.')
flags.DEFINE_enum('executor', 'local', ['local', 'ray'],
                  'local: worker processes on this machine; ray: Ray tasks.')
flags.DEFINE_string('ray_address', None, 'Ray cluster to join (host:port or '
                    "'auto'); none: a local Ray instance.")
flags.DEFINE_integer('ray_cpus_per_child', 1, 'CPUs each Ray task takes.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  from jaxcnn.search import executors
  from jaxcnn.search import run
  if len(argv) > 1:
    sys.exit(f'FATAL unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.parallel < 1 or FLAGS.ray_cpus_per_child < 1:
    sys.exit('FATAL --parallel and --ray_cpus_per_child must be at least 1.')
  config = FLAGS.config
  workdir = os.path.abspath(FLAGS.workdir)
  try:
    run.check_config(config)
    run.open_search(config, workdir)  # Another search's workdir: refused.
  except run.SearchError as e:
    sys.exit(f'FATAL {e}')
  if FLAGS.executor == 'ray':
    try:
      executor = executors.RayExecutor(FLAGS.ray_address,
                                       FLAGS.ray_cpus_per_child,
                                       config.child_xla_flags)
    except ImportError:
      sys.exit('FATAL --executor=ray needs Ray: pip install ray '
               '(requirements-dev.txt pins the tested version).')
  else:
    executor = executors.LocalExecutor(FLAGS.parallel, config.child_xla_flags)
  # A SystemExit: the state is saved, children in flight resume on rerun.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  logging.set_verbosity(logging.WARNING)
  try:
    search = run.run(config, workdir, executor, FLAGS.parallel,
                     log=lambda line: print(line, flush=True))
  except run.SearchError as e:
    sys.exit(f'FATAL {e}')
  best = search.best()
  print(f'Search complete: best accuracy {best["fitness"]:.4f} (child '
        f'{best["id"]}); {os.path.join(workdir, "best.json")} has its '
        f'genotype, {os.path.join(workdir, "summary.md")} the summary.')


if __name__ == '__main__':
  app.run(main)
