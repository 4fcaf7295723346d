"""Input pipelines and data augmentation."""
