"""Per-class evaluation: python evaluate.py --checkpoint=PATH --output=DIR.

PATH: a training workdir (or one of its checkpoints), evaluated on its run's
eval split with its evaluation preprocessing, or the output of `python -m
jaxcnn.convert` with --dataset (and --data_dir). Writes DIR/report.json
(accuracy, top-5, per-class precision/recall/F1/support, macro and
weighted averages, the confusion matrix), DIR/report.md and
DIR/confusion_matrix.png, and prints report.md. --quantize=int8 and
--prune=FRACTION evaluate the compressed weights and compare them with the
float model (jaxcnn/evaluate.py, jaxcnn/compress.py). Several processes
(--coordinator_address, --num_processes, --process_id, as for train.py)
share the split and count every example once.

Instead of a split, --files=DIR evaluates the image files DIR/<class name>/*
(the names of the checkpoint's classes), and --files=IMAGES.npy
--labels=LABELS.npy a batch of preprocessed images (as predict.py takes
them) and their integer labels; neither needs TensorFlow.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', None,
                    'Training workdir or checkpoint, or jaxcnn.convert output.')
flags.DEFINE_string('output', None, 'Directory for the report (new or empty).')
flags.DEFINE_string('split', None, 'Dataset split (default: the run\'s eval '
                    'split), e.g. test, validation, train[:10%].')
flags.DEFINE_bool('use_ema', False,
                  'Use the EMA weights (runs with --config.ema_decay > 0).')
flags.DEFINE_string('dataset', None, 'Dataset to evaluate on (default: the '
                    'run\'s; needed for converted weights).')
flags.DEFINE_string('data_dir', None, 'tfds data dir (default: the run\'s).')
flags.DEFINE_string('files', None, 'Evaluate these labelled files instead of '
                    'a split: DIR/<class name>/* images, or a .npy batch of '
                    'preprocessed images with --labels.')
flags.DEFINE_string('labels', None, 'The .npy of integer labels of a .npy '
                    '--files batch.')
flags.DEFINE_integer('batch_size', None, 'Global eval batch size (default: '
                     'the run\'s eval_batch_size).', lower_bound=1)
flags.DEFINE_string('quantize', None, 'Compress the weights first: int8 '
                    '(per-output-channel symmetric kernels).')
flags.DEFINE_float('prune', 0.0, 'Compress the weights first: zero this '
                   'fraction of all kernel weights, smallest |w| first.')
flags.DEFINE_bool('overwrite', False, 'Replace an earlier report in --output.')
flags.DEFINE_string('coordinator_address', '',
                    'host:port of process 0 for a multi-process evaluation.')
flags.DEFINE_integer('num_processes', 0, 'Processes of a multi-process run.')
flags.DEFINE_integer('process_id', -1, 'This process in a multi-process run.')
flags.DEFINE_integer('distributed_timeout', 300,
                     'Seconds to wait for every process to join.',
                     lower_bound=1)
flags.mark_flags_as_required(['checkpoint', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  # Read when TensorFlow starts, which the imports below do.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from jaxcnn import distributed
  from jaxcnn import evaluate
  from jaxcnn import predict
  predict.keep_tensorflow_off_accelerators()
  logging.set_verbosity(logging.ERROR)  # Orbax warns about optional files.
  try:
    # Each process reads its part of the examples; process 0 writes the
    # report.
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id, FLAGS.distributed_timeout)
    evaluate.run(FLAGS.checkpoint, FLAGS.output, split=FLAGS.split,
                 use_ema=FLAGS.use_ema, dataset=FLAGS.dataset,
                 data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size,
                 files=FLAGS.files, labels=FLAGS.labels,
                 quantize=FLAGS.quantize, prune=FLAGS.prune,
                 overwrite=FLAGS.overwrite)
  except (ValueError, OSError) as e:
    sys.exit(f'FATAL {e}')


if __name__ == '__main__':
  app.run(main)
