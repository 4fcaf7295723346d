"""Boxes found by a trained or converted detector, behind predict.py on a
detection checkpoint.

Image files get the detection evaluation preprocessing the checkpoint
records (longer side resized to the input size, bottom/right padded), done
with Pillow and numpy; boxes come back as [x1, y1, x2, y2] pixels of the
original image. `.npy` files hold preprocessed float inputs `[N, S, S, C]`
or `[S, S, C]`, whose boxes are in input pixels.
"""

import dataclasses
import json
import os
from typing import Any, Sequence, TextIO

import flax.linen as nn
import jax
import numpy as np

from jaxcnn import checkpoint
from jaxcnn import predict
from jaxcnn.data import catalog
from jaxcnn.data import eval_image
from jaxcnn.detection import anchors as anchors_lib
from jaxcnn.detection import postprocess

DEFAULT_MIN_SCORE = 0.3


@dataclasses.dataclass(frozen=True)
class ImageDetections:
  """The boxes found in one image, best first."""
  input: str
  boxes: list[list[float]]  # [x1, y1, x2, y2] pixels of the input image.
  scores: list[float]
  classes: list[int]  # 0-based; COCO's category id is class + 1.
  names: list[str] | None = None


@dataclasses.dataclass
class Detector:
  """A detection model with its weights, preprocessing and post-processing,
  as a checkpoint records them."""
  name: str
  model: nn.Module
  variables: dict
  meta: dict[str, Any]

  def __post_init__(self):
    self.variables = jax.device_put(self.variables)
    prep = self.meta['preprocessing']
    self.image_size = prep['image_size']
    self.mean, self.std = (np.float32(s) for s in catalog.channel_statistics(
        prep['mean'], prep['std'], self.model.in_channels))
    levels = self.meta['anchors']
    self.anchors = anchors_lib.anchor_boxes(
        (self.image_size, self.image_size), levels['min_level'],
        levels['max_level'], levels['anchor_scale'])
    self.class_names = self.meta.get('class_names')
    self._detect = jax.jit(self.apply)

  def apply(self, variables: dict, images: jax.Array, scale: jax.Array,
            original_size: jax.Array) -> postprocess.Detections:
    """The jittable detections of preprocessed `images` [batch, S, S, C],
    boxes in original pixels (`scale` [batch]: original pixels per input
    pixel) clipped to `original_size` [batch, 2] (height, width)."""
    class_outputs, box_outputs = self.model.apply(variables, images,
                                                  train=False)
    settings = self.meta['postprocess']
    return postprocess.detect(
        class_outputs, box_outputs, self.anchors, self.meta['num_classes'],
        max_candidates=settings['max_candidates'],
        max_detections=settings['max_detections'],
        iou_threshold=settings['nms_iou_threshold'], scale=scale,
        original_size=original_size, nms_method=settings['nms_method'],
        soft_nms_sigma=settings['soft_nms_sigma'])

  def load_image(self, path: str) -> tuple[np.ndarray, float, np.ndarray]:
    """(the `[S, S, C]` input, original pixels per input pixel, original
    (height, width)) of an image file."""
    try:
      with open(path, 'rb') as f:
        pixels = eval_image.decode(f.read(), self.model.in_channels)
    except OSError as e:
      raise ValueError(f'{path}: cannot read it ({e.strerror}).') from None
    except ValueError as e:
      raise ValueError(f'{path}: not a readable image ({e}).') from None
    # In float32, as the eval pipeline (data.detection.resized_shape).
    original = np.float32(pixels.shape[:2])
    ratio = np.min(np.float32(self.image_size) / original)
    new_height, new_width = np.clip(np.round(original * ratio), 1,
                                    self.image_size).astype(int)
    image = np.zeros((self.image_size, self.image_size,
                      self.model.in_channels), np.float32)
    image[:new_height, :new_width] = (eval_image.resize(
        pixels, new_height, new_width, 'bilinear') - self.mean) / self.std
    return image, np.float32(1) / ratio, original

  def detections(self, images: np.ndarray, scales: np.ndarray,
                 sizes: np.ndarray, batch_size: int
                 ) -> postprocess.Detections:
    """The detections of preprocessed `images` `[N, S, S, C]`, batched
    with padding so that every batch shares one compilation."""
    batch_size = min(batch_size, len(images))
    parts = []
    for start in range(0, len(images), batch_size):
      count = min(batch_size, len(images) - start)
      batch = [_padded(array[start:start + count], batch_size, fill)
               for array, fill in ((images, 0.0), (scales, 1.0),
                                   (sizes, self.image_size))]
      found = jax.device_get(self._detect(self.variables, *batch))
      parts.append(jax.tree.map(lambda x, n=count: x[:n], found))
    return jax.tree.map(lambda *x: np.concatenate(x), *parts)


def _padded(array: np.ndarray, rows: int, fill: float) -> np.ndarray:
  out = np.full((rows, *array.shape[1:]), fill, np.float32)
  out[:len(array)] = array
  return out


def load(path: str, use_ema: bool = False,
         image_size: int | None = None) -> Detector:
  """The detector of a training workdir or checkpoint, or of weights
  written by `python -m jaxcnn.convert`; at `image_size` instead of the
  recorded input side if given (the anchors follow)."""
  path = predict.existing(path)
  meta = checkpoint.load_meta(path)
  if meta.get('task') != 'detection':
    raise ValueError(f'{path} holds a {meta.get("task", "classification")} '
                     'model, not a detector.')
  if image_size:
    stride = 2 ** meta['anchors']['max_level']
    if image_size % stride:
      raise ValueError(f'image size {image_size}: {meta["model"]} takes '
                       f'sides that are multiples of {stride} (2^max_level).')
    meta = dict(meta, preprocessing=dict(meta['preprocessing'],
                                         image_size=image_size))
  variables = checkpoint.load_variables(path, use_ema)[0]
  return Detector(meta['model'], predict.model_of(meta), variables, meta)


def load_inputs(detector: Detector, paths: Sequence[str]
                ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
  """(names, inputs [N, S, S, C], scales [N], original sizes [N, 2]) of image
  files and preprocessed `.npy` batches (scale 1: boxes in input pixels)."""
  names, images, scales, sizes = [], [], [], []
  shape = (detector.image_size, detector.image_size,
           detector.model.in_channels)
  for path in paths:
    if path.lower().endswith('.npy'):
      batch = predict.read_npy(path)
      if batch.shape[1:] != shape or not np.issubdtype(batch.dtype,
                                                       np.floating):
        raise ValueError(f'{path}: holds {batch.dtype} {batch.shape}; '
                         f'{detector.name} takes preprocessed float inputs '
                         f'[N, {", ".join(map(str, shape))}].')
      names += ([path] if len(batch) == 1 else
                [f'{path}[{i}]' for i in range(len(batch))])
      images += list(batch.astype(np.float32))
      scales += [1.0] * len(batch)
      sizes += [np.float32(shape[:2])] * len(batch)
    else:
      image, scale, size = detector.load_image(path)
      names.append(path)
      images.append(image)
      scales.append(scale)
      sizes.append(size)
  return (names, np.stack(images), np.float32(scales), np.stack(sizes))


def select(detector: Detector, names: Sequence[str],
           found: postprocess.Detections,
           min_score: float) -> list[ImageDetections]:
  """Each image's valid detections scoring at least `min_score`."""
  results = []
  for i, name in enumerate(names):
    keep = np.nonzero(found.valid[i] & (found.scores[i] >= min_score))[0]
    classes = [int(c) for c in found.classes[i][keep]]
    results.append(ImageDetections(
        name, [[round(float(v), 2) for v in box]
               for box in found.boxes[i][keep]],
        [round(float(s), 4) for s in found.scores[i][keep]], classes,
        [detector.class_names[c] for c in classes]
        if detector.class_names else None))
  return results


def draw(path: str, result: ImageDetections, output: str) -> None:
  """Writes the image at `path` with its boxes, labels and scores as the PNG
  `output`."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  with Image.open(path) as original:
    image = original.convert('RGB')
  pen = ImageDraw.Draw(image)
  width = max(1, round(max(image.size) / 200))
  labels = result.names or [str(c) for c in result.classes]
  for box, label, score in zip(result.boxes, labels, result.scores):
    pen.rectangle(box, outline=(255, 40, 40), width=width)
    pen.text((box[0] + width, box[1] + width), f'{label} {score:.2f}',
             fill=(255, 255, 0))
  image.save(output, format='PNG')


def format_table(results: Sequence[ImageDetections]) -> str:
  lines = []
  for result in results:
    lines.append(f'{result.input}: {len(result.boxes)} boxes')
    labels = result.names or [str(c) for c in result.classes]
    for box, label, score in zip(result.boxes, labels, result.scores):
      corners = ', '.join(f'{v:.1f}' for v in box)
      lines.append(f'  {label:<12} {score:.3f}  [{corners}]')
  return '\n'.join(lines)


def write_jsonl(results: Sequence[ImageDetections], f: TextIO) -> None:
  for result in results:
    record = {k: v for k, v in dataclasses.asdict(result).items()
              if v is not None}
    f.write(json.dumps(record) + '\n')


def run(checkpoint_path: str, inputs: Sequence[str], *,
        min_score: float = DEFAULT_MIN_SCORE, use_ema: bool = False,
        output: str | None = None, draw_dir: str | None = None,
        overwrite: bool = False, batch_size: int = 16
        ) -> list[ImageDetections]:
  """Prints the boxes of every image in `inputs`, and writes them to
  `output` (JSON lines) and, drawn on the images, to `draw_dir` (one PNG per
  image file), every input checked before any is run.

  Raises ValueError or OSError (one line, naming the file) on a bad input or
  checkpoint, or an existing output without `overwrite`.
  """
  if output and not overwrite and os.path.exists(output):
    raise FileExistsError(f'{output} exists; pass --overwrite to replace it.')
  drawings = {}
  if draw_dir:
    for path in inputs:
      if not path.lower().endswith('.npy'):
        target = os.path.join(draw_dir, os.path.splitext(
            os.path.basename(path))[0] + '.png')
        if target in drawings.values():
          raise ValueError(f'{path}: another input is also drawn to {target}; '
                           'give the images different names.')
        if os.path.exists(target) and not overwrite:
          raise FileExistsError(f'{target} exists; pass --overwrite to '
                                'replace it.')
        drawings[path] = target
  detector = load(checkpoint_path, use_ema)
  names, images, scales, sizes = load_inputs(detector, inputs)
  results = select(detector, names,
                   detector.detections(images, scales, sizes, batch_size),
                   min_score)
  print(format_table(results))
  if output:
    with open(output, 'w' if overwrite else 'x') as f:
      write_jsonl(results, f)
  if drawings:
    os.makedirs(draw_dir, exist_ok=True)
    for result in results:
      if result.input in drawings:
        draw(result.input, result, drawings[result.input])
  return results
