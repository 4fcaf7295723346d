"""COCO box mAP of the detection task's eval outputs, by pycocotools.

Ground truth and detections are gathered on the host, batch by batch, and
handed to pycocotools in memory: category_id = class + 1, boxes as COCO's
[x, y, width, height] in original pixels, `iscrowd` from `gt_crowd` and the
ground truth's `area` (which sorts boxes into small / medium / large) from
`gt_area`. pycocotools averages over the categories that have ground truth:
a category without any (such as the 10 ids COCO's 90-id space never uses)
is -1 and left out, and its detections count as nothing.
"""

import contextlib
import io
import logging
from typing import Any

import jax
import numpy as np
from pycocotools import coco
from pycocotools import cocoeval

from jaxcnn.tasks import base

# pycocotools' `COCOeval.stats`, in its order.
STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10',
              'AR100', 'ARs', 'ARm', 'ARl')


def _xywh(corners: np.ndarray, x_first: bool) -> np.ndarray:
  """[N, 4] xyxy (x_first) or yxyx corners -> [N, 4] [x, y, width,
  height]."""
  corners = corners.astype(np.float64)
  x1, y1, x2, y2 = (corners.T if x_first else corners[:, [1, 0, 3, 2]].T)
  return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


class CocoEvaluator(base.Evaluator):
  """pycocotools' 12 box statistics of every image added, once each."""

  def __init__(self):
    self._image_ids: list[np.ndarray] = []
    self._seen: set[int] = set()
    # Per batch: columns [image_id, x, y, width, height, area, iscrowd,
    # category_id] of the ground truth and [image_id, x, y, width, height,
    # score, category_id] of the detections (pycocotools' numpy layout).
    self._ground_truth: list[np.ndarray] = []
    self._detections: list[np.ndarray] = []
    self._summary = ''

  def add(self, outputs: dict[str, Any]) -> None:
    """One padded eval batch (`Task.eval_outputs`); rows with mask 0 are
    padding, ground-truth rows with gt_valid 0 and detections with
    det_valid False are not boxes.

    Raises:
      ValueError: an image_id added before (each eval image counts once).
    """
    outputs = jax.device_get(outputs)
    real = np.asarray(outputs['mask']) > 0
    image_ids = np.asarray(outputs['image_id'])[real].astype(np.int64)
    for image_id in image_ids.tolist():
      if image_id in self._seen:
        raise ValueError(f'image_id {image_id} was added to the evaluation '
                         'twice: each eval image must be evaluated once.')
      self._seen.add(image_id)
    self._image_ids.append(image_ids)
    rows = {k: np.asarray(v)[real] for k, v in outputs.items()}

    def image_id_column(valid):
      return np.broadcast_to(image_ids[:, None], valid.shape)[valid][:, None]

    gt = rows['gt_valid'] > 0
    self._ground_truth.append(np.concatenate([
        image_id_column(gt), _xywh(rows['gt_boxes'][gt], x_first=False),
        rows['gt_area'][gt][:, None], rows['gt_crowd'][gt][:, None] > 0,
        rows['gt_classes'][gt][:, None] + 1], axis=1, dtype=np.float64))
    det = rows['det_valid'].astype(bool)
    self._detections.append(np.concatenate([
        image_id_column(det), _xywh(rows['det_boxes'][det], x_first=True),
        rows['det_scores'][det][:, None],
        rows['det_classes'][det][:, None] + 1], axis=1, dtype=np.float64))

  def result(self) -> dict[str, float]:
    """The 12 statistics (-1 where pycocotools has no ground truth to
    measure against); the printed summary is logged and kept in
    `summary()`."""
    image_ids = np.concatenate(self._image_ids or [np.zeros(0, np.int64)])
    ground_truth = np.concatenate(self._ground_truth or [np.zeros((0, 8))])
    detections = np.concatenate(self._detections or [np.zeros((0, 7))])
    categories = np.union1d(ground_truth[:, 7], detections[:, 6])
    if not categories.size:  # pycocotools cannot accumulate no categories.
      self._summary = (f'COCO box evaluation of {image_ids.size} images: no '
                       'ground truth and no detections.')
      stats = [-1.0] * len(STAT_NAMES)
    else:
      with contextlib.redirect_stdout(io.StringIO()):  # Progress messages.
        evaluation = _evaluation(image_ids, ground_truth, detections,
                                 categories)
      table = io.StringIO()
      with contextlib.redirect_stdout(table):
        evaluation.summarize()
      stats = evaluation.stats
      self._summary = (f'COCO box evaluation of {image_ids.size} images, '
                       f'{len(ground_truth)} ground-truth boxes, '
                       f'{len(detections)} detections:\n'
                       + table.getvalue().rstrip())
    logging.info('%s', self._summary)
    return {name: float(stat) for name, stat in zip(STAT_NAMES, stats)}

  def summary(self) -> str:
    """pycocotools' summary table of the last `result()`."""
    return self._summary


def _evaluation(image_ids: np.ndarray, ground_truth: np.ndarray,
                detections: np.ndarray, categories: np.ndarray
                ) -> cocoeval.COCOeval:
  """COCOeval of the gathered boxes, evaluated and accumulated."""
  truth = coco.COCO()
  truth.dataset = {
      'images': [{'id': int(i)} for i in image_ids],
      'categories': [{'id': int(c)} for c in categories],
      'annotations': [
          {'id': n + 1, 'image_id': int(row[0]), 'bbox': row[1:5].tolist(),
           'area': float(row[5]), 'iscrowd': int(row[6]),
           'category_id': int(row[7])}
          for n, row in enumerate(ground_truth)]}
  truth.createIndex()
  if len(detections):
    results = truth.loadRes(detections)
  else:  # loadRes cannot load an empty list.
    results = coco.COCO()
    results.dataset = {'images': truth.dataset['images'],
                       'categories': truth.dataset['categories'],
                       'annotations': []}
    results.createIndex()
  evaluation = cocoeval.COCOeval(truth, results, 'bbox')
  evaluation.evaluate()
  evaluation.accumulate()
  return evaluation
