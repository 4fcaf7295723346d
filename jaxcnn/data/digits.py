"""`digits`: scikit-learn's bundled 8x8 handwritten digits as a tfds dataset.

It ships inside scikit-learn, so it prepares offline in seconds; that makes it
the quickstart's default dataset and the one the end-to-end tests train on.
"""

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
TEST_EXAMPLES = 360


class Digits(tfds.core.GeneratorBasedBuilder):
  """1,797 handwritten digits upscaled from 8x8 to 32x32 grayscale."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Fixed 1437/360 train/test split.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('scikit-learn load_digits: 8x8 images of 16 grey levels, '
                     f'upscaled (nearest) to {IMAGE_SIZE}x{IMAGE_SIZE}.'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    from sklearn import datasets  # Only needed while preparing.
    digits = datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    scale = IMAGE_SIZE // images.shape[1]
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)[..., None]
    order = np.random.RandomState(0).permutation(len(images))
    test, train = order[:TEST_EXAMPLES], order[TEST_EXAMPLES:]
    return {
        'train': self._generate_examples(images, digits.target, train),
        'test': self._generate_examples(images, digits.target, test),
    }

  def _generate_examples(self, images, labels, indices):
    for index in indices:
      yield int(index), {'image': images[index], 'label': int(labels[index])}
