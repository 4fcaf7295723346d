"""Prepares an image folder (`jaxcnn.data.image_folder`) as a tfds dataset,
so that it is read like any other: seeded, resumable, split per process.

Each state of the folder (its fingerprint) is prepared once, into
`DIR/tfds_prepared/<fingerprint>/`; a changed folder is prepared anew there.
`prepare` decodes every image first, so a file that the pipeline could not
read stops it, naming the file, before anything is written. The files' own
bytes are stored, not re-encoded.
"""

import os
import re

import tensorflow_datasets as tfds

from jaxcnn.data import image_folder
from jaxcnn.imports import tensorflow as tf

# Named in the message when more images than this cannot be decoded.
_NAMED_UNREADABLE = 3


def _decode(encoded: tf.Tensor) -> tf.Tensor:
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _reason(path: str) -> str:
  """TensorFlow's error decoding `path`, without its op decorations."""
  try:
    _decode(tf.io.read_file(path))
  except tf.errors.OpError as e:
    message = re.sub(r'\{\{.*?\}\}|\[Op:.*', '', e.message)
    return message.strip().rstrip('.')
  return 'unknown error'


def check_images(layout: image_folder.Layout) -> None:
  """Raises ImageFolderError naming the files of `layout` that TensorFlow
  cannot decode (decoded in parallel)."""
  paths = [os.path.join(layout.root, path)
           for examples in layout.splits.values() for path, _ in examples]
  decoded = tf.data.Dataset.from_tensor_slices(paths).map(
      lambda path: (path, tf.shape(_decode(tf.io.read_file(path)))),
      num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  readable = {path.decode() for path, _ in decoded.as_numpy_iterator()}
  unreadable = [path for path in paths if path not in readable]
  if not unreadable:
    return
  named = [f'{path} ({_reason(path)})'
           for path in unreadable[:_NAMED_UNREADABLE]]
  more = len(unreadable) - len(named)
  raise image_folder.ImageFolderError(
      f'{len(unreadable)} image(s) cannot be decoded: {", ".join(named)}'
      f'{f" and {more} more" if more else ""}. Fix or remove them.')


class ImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The images of one folder as its files are now (`layout`)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'train/ and val/ or a held-out fraction.'}

  def __init__(self, layout: image_folder.Layout, **kwargs):
    self.layout = layout
    super().__init__(data_dir=image_folder.prepared_dir(
        layout.root, layout.fingerprint), **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'The images of {self.layout.root}.',
        features=tfds.features.FeaturesDict({
            # Any size; grayscale and RGBA files are decoded as RGB.
            'image': tfds.features.Image(shape=(None, None, 3)),
            'label': tfds.features.ClassLabel(
                names=list(self.layout.class_names)),
            'file_name': tfds.features.Text(),  # Relative to the folder.
        }),
        supervised_keys=('image', 'label'),
    )

  def prepare(self) -> None:
    """Checks every image, then writes the dataset."""
    check_images(self.layout)
    self.download_and_prepare()

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(examples)
            for split, examples in self.layout.splits.items()}

  def _generate_examples(self, examples):
    for path, label in examples:
      yield path, {'image': os.path.join(self.layout.root, path),
                   'label': label, 'file_name': path}
