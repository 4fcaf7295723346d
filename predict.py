"""Top-k classes, or boxes, of images: python predict.py --checkpoint=PATH FILE ...

PATH: a training workdir (or one of its checkpoints) or the output of
`python -m jaxcnn.convert`. FILE: an image (JPEG, PNG, ...), preprocessed as
in evaluation, or a .npy of preprocessed float images [N, H, W, C] or
[H, W, C]. Prints a table; --output=FILE.jsonl also writes one record per
image. A detector's boxes are [x1, y1, x2, y2] pixels of the image;
--draw=DIR also writes each image with its boxes as DIR/NAME.png.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', None,
                    'Training workdir or checkpoint, or jaxcnn.convert output.')
flags.DEFINE_integer('top_k', 5, 'Classes to show per image.', lower_bound=1)
flags.DEFINE_bool('use_ema', False,
                  'Use the EMA weights (runs with --config.ema_decay > 0).')
flags.DEFINE_string('output', None, 'Also write the predictions here (JSONL).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing --output file.')
flags.DEFINE_integer('batch_size', 64, 'Images per model call.', lower_bound=1)
flags.DEFINE_float('min_score', 0.3, 'Detectors: boxes scoring less are left '
                   'out.', lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_string('draw', None, 'Detectors: write each image with its boxes '
                    'to this directory.')
flags.mark_flags_as_required(['checkpoint'])


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('Pass one or more image or .npy files.')
  # Read when TensorFlow starts, which the imports below do.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from jaxcnn import predict
  predict.keep_tensorflow_off_accelerators()
  logging.set_verbosity(logging.ERROR)  # Orbax warns about optional files.
  try:
    if predict.task_of(FLAGS.checkpoint) == 'detection':
      from jaxcnn import predict_detection
      predict_detection.run(
          FLAGS.checkpoint, argv[1:], min_score=FLAGS.min_score,
          use_ema=FLAGS.use_ema, output=FLAGS.output, draw_dir=FLAGS.draw,
          overwrite=FLAGS.overwrite, batch_size=FLAGS.batch_size)
    else:
      predict.run(FLAGS.checkpoint, argv[1:], top=FLAGS.top_k,
                  use_ema=FLAGS.use_ema, output=FLAGS.output,
                  overwrite=FLAGS.overwrite, batch_size=FLAGS.batch_size)
  except (ValueError, OSError) as e:
    sys.exit(f'FATAL {e}')


if __name__ == '__main__':
  app.run(main)
