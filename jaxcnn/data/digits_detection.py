"""`digits_detection`: scikit-learn's digit glyphs pasted on canvases, with
boxes, as a tfds dataset in tfds coco/2017's feature layout.

Like `digits` it prepares offline in seconds, so the detection quickstart and
tests need no download. Each 128x128 grayscale canvas holds 1-4 glyphs at
random sizes and places; a glyph may overlap an earlier one a little (at
most 30% of the smaller box inside the other) but is never hidden: overlapping
glyphs combine by taking the brighter pixel. Boxes are tight around each
glyph's ink. Train and test canvases are made from disjoint glyphs: the test
glyphs are those of `digits`' test split.
"""

import numpy as np
import tensorflow_datasets as tfds

from jaxcnn.data import digits

CANVAS_SIZE = 128
TRAIN_CANVASES = 2000
TEST_CANVASES = 300
MAX_DIGITS = 4
MIN_SIDE, MAX_SIDE = 12, 48  # Glyph height in pixels.
MAX_OVERLAP = 0.3  # Of the smaller box's area.
_PLACEMENT_TRIES = 20
_SEEDS = {'train': 1, 'test': 2}


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """The intersection of one [y1, x1, y2, x2] box with each of `boxes`
  [N, 4], as a fraction of the smaller box's area."""
  top_left = np.maximum(box[:2], boxes[:, :2])
  bottom_right = np.minimum(box[2:], boxes[:, 2:])
  intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
  areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
  return intersection / np.minimum(np.prod(box[2:] - box[:2]), areas)


def _ink_crop(image: np.ndarray) -> np.ndarray:
  rows, cols = np.nonzero(image)
  return image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def _glyph(image: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
  """The glyph's ink (0-255) resized to a random height, its aspect ratio
  varied by up to 20%, and cropped again to its ink."""
  from PIL import Image  # Only needed while preparing.
  ink = _ink_crop(image)
  height = rng.randint(MIN_SIDE, MAX_SIDE + 1)
  aspect = ink.shape[1] / ink.shape[0] * rng.uniform(0.8, 1.2)
  width = int(np.clip(round(height * aspect), 3, CANVAS_SIZE))
  resized = Image.fromarray(ink).resize((width, height), Image.BILINEAR)
  return _ink_crop(np.asarray(resized))


def make_canvas(glyphs: np.ndarray, labels: np.ndarray,
                rng: np.random.RandomState) -> tuple[np.ndarray, list]:
  """One canvas [S, S] uint8 and its objects [(box in pixels, label)], from
  1-MAX_DIGITS glyphs drawn from `glyphs`; a glyph that finds no place
  overlapping the earlier ones by at most MAX_OVERLAP is left out."""
  canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.uint8)
  objects = []
  for _ in range(rng.randint(1, MAX_DIGITS + 1)):
    index = rng.randint(len(glyphs))
    patch = _glyph(glyphs[index], rng)
    height, width = patch.shape
    for _ in range(_PLACEMENT_TRIES):
      top = rng.randint(CANVAS_SIZE - height + 1)
      left = rng.randint(CANVAS_SIZE - width + 1)
      box = np.array([top, left, top + height, left + width])
      if not objects or _overlap(
          box, np.stack([b for b, _ in objects])).max() <= MAX_OVERLAP:
        break
    else:
      continue
    window = canvas[top:top + height, left:left + width]
    np.maximum(window, patch, out=window)
    objects.append((box, int(labels[index])))
  return canvas, objects


class DigitsDetection(tfds.core.GeneratorBasedBuilder):
  """2,000 train and 300 test 128x128 canvases of 1-4 boxed digits."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Fixed seeds; glyphs split as `digits`.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('scikit-learn load_digits glyphs (8x8, 16 grey levels) '
                     f'resized to {MIN_SIDE}-{MAX_SIDE} px high and pasted '
                     f'on black {CANVAS_SIZE}x{CANVAS_SIZE} canvases, with '
                     'tight boxes; features as tfds coco/2017.'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(CANVAS_SIZE, CANVAS_SIZE, 1)),
            'image/id': np.int64,
            'objects': tfds.features.Sequence({
                'bbox': tfds.features.BBoxFeature(),
                'label': tfds.features.ClassLabel(
                    names=[str(d) for d in range(10)]),
                'is_crowd': np.bool_,
                'area': np.int64,  # The box's, in pixels (there are no masks).
            }),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    from sklearn import datasets  # Only needed while preparing.
    data = datasets.load_digits()
    glyphs = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.RandomState(0).permutation(len(glyphs))
    test, train = order[:digits.TEST_EXAMPLES], order[digits.TEST_EXAMPLES:]
    return {
        'train': self._generate_examples(glyphs[train], data.target[train],
                                         TRAIN_CANVASES, _SEEDS['train']),
        'test': self._generate_examples(glyphs[test], data.target[test],
                                        TEST_CANVASES, _SEEDS['test']),
    }

  def _generate_examples(self, glyphs, labels, count, seed):
    rng = np.random.RandomState(seed)
    for image_id in range(count):
      canvas, objects = make_canvas(glyphs, labels, rng)
      boxes = np.array([box for box, _ in objects], np.float32)
      yield image_id, {
          'image': canvas[..., None],
          'image/id': image_id,
          'objects': {
              'bbox': boxes / CANVAS_SIZE,
              'label': [label for _, label in objects],
              'is_crowd': np.zeros(len(objects), np.bool_),
              'area': np.prod(boxes[:, 2:] - boxes[:, :2], axis=1).astype(
                  np.int64),
          },
      }
