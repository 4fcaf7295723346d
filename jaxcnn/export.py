"""A model's inference function serialised with `jax.export`.

python -m jaxcnn.export --checkpoint=PATH --out=FILE [--use_ema]
  [--image_size=N] [--platforms=cpu,cuda,tpu] [--overwrite]

FILE holds the eval-mode inference function with the weights inside, for
any batch size (the batch dimension is symbolic). A classifier's takes
preprocessed float32 images `[batch, H, W, C]` and gives float32 logits
`[batch, classes]`; a detector's takes the images (longer side resized to
S, padded bottom/right), `scale` `[batch]` (original pixels per input pixel)
and `original_size` `[batch, 2]` (height, width), and gives the
post-processed detections (NMS inside): a dict of `boxes` `[batch, D, 4]`
(x1, y1, x2, y2 original pixels), `scores`, `classes` (0-based) and `valid`
`[batch, D]`. FILE.json says what it takes (model, inputs, preprocessing,
class names). Reloading needs only JAX, neither jaxcnn nor TensorFlow:

  exported = jax.export.deserialize(bytearray(open(FILE, 'rb').read()))
  logits = exported.call(images)
  found = exported.call(images, scale, original_size)  # A detector's.
"""

import dataclasses
import json
import os
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

INFO_SUFFIX = '.json'


def export(model: nn.Module, variables: Any, image_shape: Sequence[int],
           platforms: Sequence[str] | None = None) -> jax.export.Exported:
  """`images [batch, *image_shape] -> logits` of `model` with `variables`
  (embedded as constants), for `platforms` (default: this one)."""
  variables = jax.tree.map(jnp.asarray, variables)

  def logits(images: jax.Array) -> jax.Array:
    return model.apply(variables, images, train=False).astype(jnp.float32)

  batch, = jax.export.symbolic_shape('batch')
  images = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
  return jax.export.export(jax.jit(logits), platforms=platforms)(images)


def export_detector(detector: Any, platforms: Sequence[str] | None = None
                    ) -> jax.export.Exported:
  """`(images, scale, original_size) -> detections` of a
  `predict_detection.Detector` at its input size, weights embedded."""
  variables = jax.tree.map(jnp.asarray, detector.variables)

  def detections(images, scale, original_size):
    return detector.apply(variables, images, scale, original_size)._asdict()

  batch, = jax.export.symbolic_shape('batch')
  size, channels = detector.image_size, detector.model.in_channels
  return jax.export.export(jax.jit(detections), platforms=platforms)(
      jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32),
      jax.ShapeDtypeStruct((batch,), jnp.float32),
      jax.ShapeDtypeStruct((batch, 2), jnp.float32))


def save(exported: jax.export.Exported, path: str,
         info: dict[str, Any]) -> None:
  """Writes the serialised `exported` to `path` and `info` to path.json."""
  with open(path, 'wb') as f:
    f.write(exported.serialize())
  with open(path + INFO_SUFFIX, 'w') as f:
    json.dump(info, f, indent=2)
    f.write('\n')


def load(path: str) -> jax.export.Exported:
  """The function `save` wrote; call it with `.call(images)`."""
  with open(path, 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))


def _exported(name: str, size: int, export_fn) -> jax.export.Exported:
  """`export_fn()`, a model's ValueError (its own message: the sizes it
  takes) made one line naming the model and size."""
  try:
    return export_fn()
  except ValueError as e:
    raise ValueError(f'{name} at {size}x{size}: '
                     f'{str(e).splitlines()[0]}') from None


def export_checkpoint(checkpoint_path: str, out: str, *,
                      use_ema: bool = False, image_size: int | None = None,
                      platforms: Sequence[str] | None = None,
                      overwrite: bool = False) -> jax.export.Exported:
  """Exports the model of a training workdir or checkpoint, or of a
  `jaxcnn.convert` output, to `out` (and out.json).

  The image size is the checkpoint's preprocessing's unless `image_size`.
  Raises ValueError or OSError (one line) on a bad checkpoint, a missing
  image size, or an existing `out` without `overwrite`.
  """
  for path in (out, out + INFO_SUFFIX):
    if not overwrite and os.path.exists(path):
      raise FileExistsError(f'{path} exists; pass --overwrite to replace it.')
  from jaxcnn import predict  # pylint: disable=import-outside-toplevel
  if predict.task_of(checkpoint_path) == 'detection':
    return _export_detector_checkpoint(checkpoint_path, out, use_ema,
                                       image_size, platforms)
  predictor = predict.load(checkpoint_path, use_ema)
  prep = predictor.preprocessing
  size = image_size or (prep and prep.image_size)
  if not size:
    raise ValueError(f'{checkpoint_path} records no image size; pass '
                     '--image_size.')
  image_shape = (size, size, predictor.model.in_channels)
  exported = _exported(predictor.name, size, lambda: export(
      predictor.model, predictor.variables, image_shape, platforms))
  save(exported, out, {
      'model': predictor.name,
      'checkpoint': os.path.abspath(checkpoint_path),
      'use_ema': use_ema,
      'input_shape': [None, *image_shape],
      'input': 'preprocessed float32 images, NHWC',
      'output': 'float32 logits [batch, classes]',
      'num_classes': predictor.model.num_classes,
      'class_names': predictor.class_names,
      'preprocessing': prep and dataclasses.asdict(prep),
      'platforms': list(exported.platforms),
  })
  return exported


def _export_detector_checkpoint(checkpoint_path: str, out: str,
                                use_ema: bool, image_size: int | None,
                                platforms: Sequence[str] | None
                                ) -> jax.export.Exported:
  from jaxcnn import predict_detection  # pylint: disable=import-outside-toplevel
  detector = predict_detection.load(checkpoint_path, use_ema, image_size)
  size = detector.image_size
  exported = _exported(detector.name, size,
                       lambda: export_detector(detector, platforms))
  meta = detector.meta
  detections = meta['postprocess']['max_detections']
  save(exported, out, {
      'model': detector.name,
      'task': 'detection',
      'checkpoint': os.path.abspath(checkpoint_path),
      'use_ema': use_ema,
      'input_shape': [None, size, size, detector.model.in_channels],
      'input': ('preprocessed float32 images, NHWC (longer side resized to '
                f'{size}, padded bottom/right); scale [batch]: original '
                'pixels per input pixel; original_size [batch, 2]: height, '
                'width'),
      'output': (f'dict: boxes [batch, {detections}, 4] x1, y1, x2, y2 '
                 'original pixels; scores, classes (0-based), valid '
                 f'[batch, {detections}]'),
      'num_classes': meta['num_classes'],
      'class_names': detector.class_names,
      'preprocessing': dict(meta['preprocessing'], image_size=size),
      'anchors': meta['anchors'],
      'postprocess': meta['postprocess'],
      'platforms': list(exported.platforms),
  })
  return exported


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)  # Orbax warns about optional files.
  try:
    exported = export_checkpoint(
        FLAGS.checkpoint, FLAGS.out, use_ema=FLAGS.use_ema,
        image_size=FLAGS.image_size, platforms=FLAGS.platforms,
        overwrite=FLAGS.overwrite)
  except (ValueError, OSError) as e:
    raise SystemExit(f'FATAL {e}') from None
  print(f'Wrote {FLAGS.out} ({", ".join(exported.platforms)}; input '
        f'{exported.in_avals[0].str_short()}) and {FLAGS.out}{INFO_SUFFIX}.')


def _define_flags() -> None:
  """CLI flags, defined only when run as a program."""
  flags.DEFINE_string('checkpoint', None,
                      'Training workdir or checkpoint, or jaxcnn.convert '
                      'output.')
  flags.DEFINE_string('out', None, 'The file to write (and FILE.json).')
  flags.DEFINE_bool('use_ema', False, 'Export the EMA weights.')
  flags.DEFINE_integer('image_size', None, 'Input height and width (default: '
                       "the checkpoint's).", lower_bound=1)
  flags.DEFINE_list('platforms', None, 'Platforms to lower for, e.g. '
                    'cpu,cuda,tpu (default: this one).')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')
  flags.mark_flags_as_required(['checkpoint', 'out'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
