"""Object detection (EfficientDet): anchors matched to the padded ground
truth on device, focal + Huber losses, detections by NMS inside the jitted
eval step, COCO AP by pycocotools on the host.

Boxes are [y1, x1, y2, x2] pixels in the batches, targets and losses;
detections leave as [x1, y1, x2, y2] pixels of the original image. Classes
are 0-based; COCO is in its 90-id space (class = category id - 1).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import models
from jaxcnn.data import catalog
from jaxcnn.detection import anchors as anchors_lib
from jaxcnn.detection import coco_eval
from jaxcnn.detection import losses as losses_lib
from jaxcnn.detection import postprocess
from jaxcnn.detection import targets as targets_lib
from jaxcnn.models import efficientdet
from jaxcnn.tasks import base

MIN_LEVEL = efficientdet.MIN_LEVEL


def anchor_scale(config: ml_collections.ConfigDict) -> float:
  """`config.anchor_scale`, or the model's own (-1): 4, D7's 5."""
  if config.anchor_scale > 0:
    return float(config.anchor_scale)
  return efficientdet.ANCHOR_SCALES.get(config.model, 4.0)


def inference_meta(image_size: int, mean: Sequence[float],
                   std: Sequence[float], max_level: int, scale: float, *,
                   max_candidates: int = postprocess.MAX_CANDIDATES,
                   max_detections: int = postprocess.MAX_DETECTIONS,
                   nms_iou_threshold: float = postprocess.NMS_IOU_THRESHOLD,
                   nms_method: str = 'hard',
                   soft_nms_sigma: float = postprocess.SOFT_NMS_SIGMA
                   ) -> dict[str, Any]:
  """What a detector's checkpoint records for inference (predict.py):
  its input preprocessing (`mean`/`std` on the 0-255 scale), anchors and
  post-processing."""
  return {
      'preprocessing': {'image_size': image_size,
                        'resize': 'longest_side_pad',
                        'mean': list(mean), 'std': list(std)},
      'anchors': {'min_level': MIN_LEVEL, 'max_level': max_level,
                  'anchor_scale': scale},
      'postprocess': {'max_candidates': max_candidates,
                      'max_detections': max_detections,
                      'nms_iou_threshold': nms_iou_threshold,
                      'nms_method': nms_method,
                      'soft_nms_sigma': soft_nms_sigma},
  }


class Detection(base.Task):
  """Boxes of `num_classes` classes; the model returns `(class_outputs,
  box_outputs)`, lists over levels 3..max_level of NHWC maps."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.spec = catalog.get_spec(config.dataset, config.data_dir)
    self.num_classes = (self.spec.num_classes if config.num_classes < 0
                        else config.num_classes)

  def model(self, defaults: dict[str, Any]) -> nn.Module:
    return models.from_config(self.config, self.num_classes, defaults)

  def anchors(self, num_levels: int) -> np.ndarray:
    """[A, 4] anchor boxes of the square input for outputs of levels
    MIN_LEVEL.. (`num_levels` of them, as the model returns), in their
    order."""
    size = self.config.image_size
    return anchors_lib.anchor_boxes((size, size), MIN_LEVEL,
                                    MIN_LEVEL + num_levels - 1,
                                    anchor_scale(self.config))

  def input_pipeline(self, model: nn.Module, process_index: int,
                     process_count: int) -> base.InputPipeline:
    from jaxcnn.data import detection  # tf.data: training only.
    return detection.create(self.config, model.in_channels,
                            process_index=process_index,
                            process_count=process_count)

  def targets(self, batch: base.Batch,
              num_levels: int) -> targets_lib.Targets:
    return targets_lib.assign_batch(
        jnp.asarray(self.anchors(num_levels)), batch['boxes'],
        batch['classes'], batch['box_valid'] > 0)

  def loss(self, outputs: Any, batch: base.Batch,
           intermediates: dict[str, Any]) -> tuple[jax.Array, base.Metrics]:
    """effdet's loss: focal loss of the classes + `box_loss_weight` x Huber
    loss of the box codes, over the batch's positive anchors + 1."""
    del intermediates
    class_outputs, box_outputs = outputs
    targets = self.targets(batch, len(class_outputs))
    losses = losses_lib.detection_loss(
        class_outputs, box_outputs, targets, self.num_classes,
        box_loss_weight=self.config.box_loss_weight,
        label_smoothing=self.config.label_smoothing)
    return losses.total, {
        'loss': losses.total, 'class_loss': losses.classes,
        'box_loss': losses.boxes,
        'positive_anchors': jnp.mean(targets.num_positives)}

  def detect(self, outputs: Any, scale: jax.Array | None = None,
             original_size: jax.Array | None = None
             ) -> postprocess.Detections:
    """The detections of the model's outputs, as the run's config says."""
    config = self.config
    class_outputs, box_outputs = outputs
    return postprocess.detect(
        class_outputs, box_outputs, self.anchors(len(class_outputs)),
        self.num_classes,
        max_candidates=config.max_candidates,
        max_detections=config.max_detections,
        iou_threshold=config.nms_iou_threshold, scale=scale,
        original_size=original_size, nms_method=config.nms_method,
        soft_nms_sigma=config.soft_nms_sigma)

  def eval_outputs(self, outputs: Any,
                   batch: base.Batch) -> dict[str, jax.Array]:
    detections = self.detect(outputs, batch['scale'], batch['original_size'])
    return {
        'image_id': batch['image_id'], 'mask': batch['mask'],
        'det_boxes': detections.boxes, 'det_scores': detections.scores,
        'det_classes': detections.classes, 'det_valid': detections.valid,
        **{k: batch[k] for k in ('gt_boxes', 'gt_classes', 'gt_valid',
                                 'gt_crowd', 'gt_area')}}

  def evaluator(self) -> base.Evaluator:
    return coco_eval.CocoEvaluator()

  def metadata(self, model: nn.Module,
               data: base.InputPipeline) -> dict[str, Any]:
    del data
    config = self.config
    return {
        'dataset': config.dataset,
        'num_classes': self.num_classes,
        'class_names': list(self.spec.class_names) or None,
        **inference_meta(
            config.image_size, self.spec.mean, self.spec.std,
            model.max_level, anchor_scale(config),
            max_candidates=config.max_candidates,
            max_detections=config.max_detections,
            nms_iou_threshold=config.nms_iou_threshold,
            nms_method=config.nms_method,
            soft_nms_sigma=config.soft_nms_sigma)}

  def dummy_batch(self, model: nn.Module, batch_size: int,
                  image_size: int) -> dict[str, np.ndarray]:
    """Random images, each with `max_boxes` random boxes (half valid)."""
    rng = np.random.RandomState(0)
    boxes = self.config.max_boxes
    corners = np.sort(rng.uniform(0, image_size, (batch_size, boxes, 2, 2)),
                      axis=2)
    return {
        'image': rng.normal(size=(batch_size, image_size, image_size,
                                  model.in_channels)).astype(np.float32),
        'boxes': corners.reshape(batch_size, boxes, 4).astype(np.float32),
        'classes': rng.randint(0, self.num_classes,
                               (batch_size, boxes)).astype(np.int32),
        'box_valid': (rng.uniform(size=(batch_size, boxes)) < 0.5).astype(
            np.float32)}
