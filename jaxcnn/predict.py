"""Top-k predictions of a trained or converted model, behind predict.py.

Image files get the evaluation preprocessing of the model (the functions the
eval pipeline uses); `.npy` files hold already preprocessed float images,
`[N, H, W, C]` or one `[H, W, C]`.
"""

import dataclasses
import json
import os
import re
from typing import Any, Sequence, TextIO

from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import checkpoint
from jaxcnn import models
from jaxcnn.data import catalog
from jaxcnn.models import lowering

# trainer.CONFIG_FILE; the trainer is not imported, it pulls in TensorBoard.
CONFIG_FILE = 'config.json'


def keep_tensorflow_off_accelerators() -> None:
  """Where TensorFlow is installed (it decodes image files), hides the GPUs
  from it: they are JAX's. Without it, .npy inputs still work."""
  try:
    from jaxcnn.imports import tensorflow as tf
  except ImportError:
    return
  tf.config.set_visible_devices([], 'GPU')


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Centre crop of `crop_fraction` of the short side, resized to
  `image_size`, normalised with the per-channel `mean`/`std` (0-255 scale)."""
  image_size: int
  crop_fraction: float
  interpolation: str
  mean: tuple[float, ...]
  std: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Prediction:
  """The `top_k` classes of one image, most probable first."""
  input: str
  classes: list[int]
  probabilities: list[float]
  names: list[str] | None = None


class Predictor:
  """A model with its weights and evaluation preprocessing."""

  def __init__(self, name: str, model: nn.Module, variables: dict,
               preprocessing: Preprocessing | None,
               class_names: Sequence[str] | None = None):
    self.name = name
    self.model = model
    self.variables = jax.device_put(variables)
    self.preprocessing = preprocessing  # None: the checkpoint records none.
    self.class_names = class_names
    self._probabilities = jax.jit(self._softmax)

  def _softmax(self, variables: dict, images: jax.Array) -> jax.Array:
    logits = self.model.apply(variables, images, train=False)
    return jax.nn.softmax(logits.astype(jnp.float32))

  def load_image(self, path: str) -> np.ndarray:
    """The `[H, W, C]` model input of an image file.

    With TensorFlow installed, the eval pipeline's own ops preprocess it,
    exactly as in evaluation; without, `data.eval_image` redoes them with
    Pillow (PNG to float rounding, JPEG to about one grey level).
    """
    prep = self.preprocessing
    if prep is None:
      raise ValueError(f'{path}: the checkpoint records no preprocessing for '
                       'images; pass preprocessed .npy batches instead.')
    try:
      with open(path, 'rb') as f:
        encoded = f.read()
    except OSError as e:
      raise ValueError(f'{path}: cannot read it ({e.strerror}).') from None
    fields = dict(size=prep.image_size, channels=self.model.in_channels,
                  method=prep.interpolation, crop_fraction=prep.crop_fraction)
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError:
      from jaxcnn.data import eval_image  # pylint: disable=g-import-not-at-top
      try:
        image = eval_image.center_crop(encoded, **fields)
      except ValueError as e:
        raise ValueError(f'{path}: not a readable image ({e}).') from None
      return ((image - np.float32(prep.mean)) / np.float32(prep.std)).astype(
          np.float32)
    from jaxcnn.data import preprocess  # pylint: disable=g-import-not-at-top
    try:
      image = preprocess.center_crop(tf.constant(encoded), **fields)
    except tf.errors.OpError as e:
      # Without TF's '{{function_node ...}}' prefix and '[Op:...]' suffix.
      reason = re.sub(r'\{\{.*?\}\}|\[Op:.*', '', e.message).strip()
      raise ValueError(f'{path}: not a readable image ({reason}).') from None
    return preprocess.normalize(image, prep.mean, prep.std).numpy()

  def check_batch(self, images: np.ndarray, path: str) -> None:
    """Raises a one-line ValueError naming `path` unless the model takes
    `images`."""
    if not np.issubdtype(images.dtype, np.floating):
      raise ValueError(f'{path}: holds {images.dtype} values; expected a '
                       'preprocessed float batch.')
    if images.ndim and not len(images):
      raise ValueError(f'{path}: holds no images (shape {images.shape}).')
    finite = np.isfinite(images)
    if not finite.all():
      raise ValueError(
          f'{path}: holds {np.size(finite) - np.count_nonzero(finite)} '
          'non-finite values (NaN or infinity); a model cannot judge them.')
    try:
      jax.eval_shape(self._softmax, self.variables,
                     jax.ShapeDtypeStruct(images.shape, jnp.float32))
    except ValueError as e:
      # layers.check_images and the pooling layers say what the model takes.
      raise ValueError(f'{path}: {e}') from None
    except Exception:  # pylint: disable=broad-except
      # E.g. a head whose input size is that of training.
      size = self.preprocessing and self.preprocessing.image_size
      hw = f'{size}, {size}' if size else 'height, width'
      raise ValueError(
          f'{path}: {self.name} cannot take images of shape {images.shape}; '
          f'expected [batch, {hw}, {self.model.in_channels}].') from None

  def probabilities(self, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities `[N, classes]` of `images` `[N, H, W, C]`."""
    batch_size = min(batch_size, len(images))
    out = []
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      padded = np.zeros((batch_size, *batch.shape[1:]), np.float32)
      padded[:len(batch)] = batch  # One compilation for every batch.
      out.append(np.asarray(self._probabilities(self.variables,
                                                padded))[:len(batch)])
    return np.concatenate(out)


def train_config(path: str, meta: dict) -> ml_collections.ConfigDict:
  """The config.json of the run that wrote the checkpoint at `path`."""
  directory = epath.Path(path)
  for candidate in (directory, directory.parent, directory.parent.parent):
    file = candidate / CONFIG_FILE
    if file.exists():
      config = ml_collections.ConfigDict(json.loads(file.read_text()))
      if config.model == meta.get('model'):
        return config
  raise FileNotFoundError(
      f'No {CONFIG_FILE} of the {meta.get("model")} run at {path}: '
      'pass a training workdir (or one of its checkpoints) or a checkpoint '
      'written by jaxcnn.convert.')


def _class_names(config: ml_collections.ConfigDict,
                 num_classes: int) -> list[str] | None:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(catalog.get_spec(config.dataset).tfds_name,
                           data_dir=config.data_dir)
    names = builder.info.features['label'].names
  except Exception:  # pylint: disable=broad-except
    return None  # Names are a nicety: indices identify the classes.
  return list(names) if len(names) == num_classes else None


def _preprocessing(prep: dict[str, Any],
                   channels: int) -> Preprocessing | None:
  """A checkpoint's recorded preprocessing: a run's (0-255 statistics) or
  converted weights' (crop and resize sizes, 0-1 statistics)."""
  if not prep:
    return None
  if 'crop_size' in prep:  # jaxcnn.convert.
    mean, std = catalog.channel_statistics(
        [255 * m for m in prep['mean']], [255 * s for s in prep['std']],
        channels)
    return Preprocessing(prep['crop_size'],
                         prep['crop_size'] / prep['resize_size'],
                         prep['interpolation'], mean, std)
  mean, std = catalog.channel_statistics(prep['mean'], prep['std'],
                                            channels)
  return Preprocessing(prep['image_size'], prep['crop_fraction'],
                       prep['interpolation'], mean, std)


def existing(path: str) -> str:
  """`path` made absolute; FileNotFoundError if nothing is there."""
  path = checkpoint.absolute(path)
  if not epath.Path(path).exists():
    raise FileNotFoundError(f'No checkpoint at {path}: it does not exist.')
  return path


def task_of(path: str) -> str:
  """The task of the model a workdir or checkpoint holds."""
  return checkpoint.load_meta(existing(path)).get('task', 'classification')


def model_of(meta: dict[str, Any]) -> nn.Module:
  """The model a checkpoint's record describes, lowered for this
  platform."""
  dtype = jnp.bfloat16 if meta.get('half_precision') else jnp.float32
  fields, legacy = lowering.split_model_kwargs(meta.get('model_kwargs', {}))
  return models.create(
      meta['model'], num_classes=meta['num_classes'], dtype=dtype,
      lowering=lowering.for_platform(jax.default_backend(), **legacy),
      **fields)


def load(path: str, use_ema: bool = False) -> Predictor:
  """The model of a training workdir or checkpoint, or of a checkpoint
  written by `python -m jaxcnn.convert`: read from the checkpoint's own
  record (checkpoints of runs before it recorded everything read their
  run's config.json)."""
  path = existing(path)
  meta = checkpoint.load_meta(path)
  if 'model' not in meta:
    raise ValueError(f'{path} names no model: it was not written by train.py '
                     'or jaxcnn.convert.')
  if meta.get('task', 'classification') != 'classification':
    raise ValueError(f'{path} holds a {meta["task"]} model, not a '
                     'classifier.')
  if 'preprocessing' in meta:
    model = model_of(meta)
    preprocessing = _preprocessing(meta['preprocessing'], model.in_channels)
    names = meta.get('class_names')
  else:
    config = train_config(path, meta)
    model = models.from_config(config, meta['num_classes'],
                               defaults=checkpoint.model_kwargs_of(
                                   config.init_from))
    spec = catalog.get_spec(config.dataset)
    preprocessing = _preprocessing(
        {'image_size': config.image_size,
         'crop_fraction': config.eval_crop_fraction,
         'interpolation': config.interpolation, 'mean': spec.mean,
         'std': spec.std}, model.in_channels)
    names = _class_names(config, meta['num_classes'])
  variables = checkpoint.load_variables(path, use_ema)[0]
  return Predictor(meta['model'], model, variables, preprocessing, names)


def read_npy(path: str) -> np.ndarray:
  """The `[N, H, W, C]` batch of a .npy file (one `[H, W, C]` image gets a
  batch axis); a one-line ValueError naming the file when unreadable."""
  try:
    images = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: cannot read it as .npy ({e}).') from None
  return images[None] if images.ndim == 3 else images


def load_inputs(predictor: Predictor, paths: Sequence[str]
                ) -> tuple[list[str], list[np.ndarray]]:
  """(names, checked `[N, H, W, C]` float32 arrays), one per file; a batch
  file's images are named `FILE[i]`."""
  names, arrays = [], []
  for path in paths:
    if path.lower().endswith('.npy'):
      images = read_npy(path)
      predictor.check_batch(images, path)
      names += ([path] if len(images) == 1 else
                [f'{path}[{i}]' for i in range(len(images))])
    else:
      images = predictor.load_image(path)[None]
      names.append(path)
    arrays.append(images.astype(np.float32))
  return names, arrays


def predict(predictor: Predictor, arrays: Sequence[np.ndarray],
            batch_size: int = 64) -> np.ndarray:
  """Class probabilities `[sum N, classes]` of `load_inputs` arrays, in
  order; arrays of one image size share batches."""
  out: list[Any] = [None] * len(arrays)
  for shape in {a.shape[1:] for a in arrays}:
    indices = [i for i, a in enumerate(arrays) if a.shape[1:] == shape]
    probabilities = predictor.probabilities(
        np.concatenate([arrays[i] for i in indices]), batch_size)
    ends = np.cumsum([len(arrays[i]) for i in indices])
    for i, part in zip(indices, np.split(probabilities, ends[:-1])):
      out[i] = part
  return np.concatenate(out)


def top_k(names: Sequence[str], probabilities: np.ndarray, k: int,
          class_names: Sequence[str] | None = None) -> list[Prediction]:
  """The `k` most probable classes of each image."""
  order = np.argsort(-probabilities, axis=-1, kind='stable')[:, :k]
  return [Prediction(
      name, [int(c) for c in classes], [float(p[c]) for c in classes],
      [class_names[c] for c in classes] if class_names else None)
          for name, classes, p in zip(names, order, probabilities)]


def format_table(predictions: Sequence[Prediction]) -> str:
  """One line per image: its top classes ('index:name' when named) and
  probabilities."""
  width = max(len('input'), *(len(p.input) for p in predictions))
  k = len(predictions[0].classes)
  lines = [f'{"input":<{width}}  top-{k} (class probability)']
  for p in predictions:
    labels = [f'{c}:{n}' if p.names else str(c)
              for c, n in zip(p.classes, p.names or p.classes)]
    lines.append(f'{p.input:<{width}}  ' + '  '.join(
        f'{label} {prob:.4f}' for label, prob in zip(labels, p.probabilities)))
  return '\n'.join(lines)


def write_jsonl(predictions: Sequence[Prediction], f: TextIO) -> None:
  for p in predictions:
    record = {k: v for k, v in dataclasses.asdict(p).items() if v is not None}
    f.write(json.dumps(record) + '\n')


def run(checkpoint_path: str, inputs: Sequence[str], *, top: int = 5,
        use_ema: bool = False, output: str | None = None,
        overwrite: bool = False, batch_size: int = 64) -> list[Prediction]:
  """Prints the `top` predictions for every image in `inputs` and writes
  them to `output` (JSON lines), all inputs checked before any is run.

  Raises ValueError or OSError (one line, naming the file) on a bad input
  or checkpoint, or an existing `output` without `overwrite`.
  """
  if output and not overwrite and os.path.exists(output):
    raise FileExistsError(f'{output} exists; pass --overwrite to replace it.')
  predictor = load(checkpoint_path, use_ema)
  names, arrays = load_inputs(predictor, inputs)
  predictions = top_k(names, predict(predictor, arrays, batch_size), top,
                      predictor.class_names)
  print(format_table(predictions))
  if output:
    with open(output, 'w' if overwrite else 'x') as f:
      write_jsonl(predictions, f)
  return predictions
