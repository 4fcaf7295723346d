"""Where a model looks: python cam.py --checkpoint=PATH --output=DIR FILE ...

PATH: a training workdir (or one of its checkpoints) or the output of
`python -m jaxcnn.convert`. FILE: an image, preprocessed as in evaluation, or
a .npy of preprocessed float images, as predict.py takes them. Writes a
heatmap overlay per image, `DIR/<name>_<method>.png`, beside its top-k
classes, and DIR/cam.jsonl (jaxcnn/cam.py).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', None,
                    'Training workdir or checkpoint, or jaxcnn.convert output.')
flags.DEFINE_string('output', None, 'Directory for the PNGs and cam.jsonl.')
flags.DEFINE_enum('method', 'gradcam', ('gradcam', 'cam'),
                  'Grad-CAM (any model) or CAM (global-pool + dense heads).')
flags.DEFINE_integer('class', None,
                     'The class to explain (default: each image\'s top '
                     'class).', lower_bound=0)
flags.DEFINE_string('layer', None, 'Module path of the feature map, e.g. '
                    'layer4_1 (default: the last with a spatial output).')
flags.DEFINE_integer('top_k', 3, 'Classes to show per image.', lower_bound=1)
flags.DEFINE_bool('use_ema', False,
                  'Use the EMA weights (runs with --config.ema_decay > 0).')
flags.DEFINE_integer('batch_size', 32, 'Images per model call.',
                     lower_bound=1)
flags.DEFINE_bool('overwrite', False, 'Replace existing output files.')
flags.mark_flags_as_required(['checkpoint', 'output'])


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('Pass one or more image or .npy files.')
  # Read when TensorFlow starts, which the imports below do.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from jaxcnn import cam
  from jaxcnn import predict
  predict.keep_tensorflow_off_accelerators()
  logging.set_verbosity(logging.ERROR)  # Orbax warns about optional files.
  try:
    cam.run(FLAGS.checkpoint, argv[1:], FLAGS.output, method=FLAGS.method,
            layer=FLAGS.layer, class_index=FLAGS['class'].value,
            top=FLAGS.top_k, use_ema=FLAGS.use_ema,
            batch_size=FLAGS.batch_size, overwrite=FLAGS.overwrite)
  except (ValueError, OSError) as e:
    sys.exit(f'FATAL {e}')


if __name__ == '__main__':
  app.run(main)
