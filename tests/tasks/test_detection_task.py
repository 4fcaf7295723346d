"""The detection task in the training loop: EfficientDet trained on the
embedded digits_detection data by train.py's own loop, COCO metrics equal to
pycocotools on the detections predict.py finds in the same images, a
self-describing checkpoint, boxes predicted and drawn without TensorFlow,
and a loss that falls."""

import contextlib
import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import efficientdet_quickstart
from jaxcnn import checkpoint
from jaxcnn import export
from jaxcnn import metrics
from jaxcnn import optim
from jaxcnn import predict_detection
from jaxcnn import sharding
from jaxcnn import state as state_lib
from jaxcnn import step as step_lib
from jaxcnn import tasks
from jaxcnn import trainer
from jaxcnn.data import catalog
from jaxcnn.data import datasets
from jaxcnn.detection import coco_eval
from tests import test_no_tensorflow

pytestmark = pytest.mark.cost_seconds(355)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# EfficientDet-D0's layout, narrowed so that it compiles in seconds.
TINY = {'fpn_channels': 16, 'fpn_repeats': 1, 'head_repeats': 1,
        'backbone_kwargs': {'width': 0.25, 'depth': 0.25}}
STEPS = 8
# A constant learning rate without clipping, so that the step test can run
# the run's own train step (compiled once, then found in the session's
# compilation cache) for more steps than the run had.
STEP = dict(learning_rate=1e-3, warmup_steps=0, schedule='constant',
            grad_clip_norm=0.0)


def _config(data_dir, **overrides):
  config = efficientdet_quickstart.get_config()
  with config.unlocked():
    config.model_kwargs.update(TINY)
  config.update(dict(data_dir=data_dir, num_steps=STEPS,
                     eval_every_steps=STEPS, log_every_steps=4,
                     checkpoint_every_steps=STEPS, batch_size=4,
                     eval_batch_size=64, progress_bar=False, **STEP))
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def run(detection_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('detector'))
  results = trainer.train_and_evaluate(_config(detection_data_dir), workdir)
  return workdir, results


def _test_images(data_dir, directory, count=None):
  """The test split's canvases as PNG files, with their ground truth."""
  builder = datasets.load_builder('digits_detection', data_dir)
  examples = tfds.as_numpy(builder.as_dataset(split='test',
                                              shuffle_files=False))
  paths, truths = [], []
  for i, example in enumerate(examples):
    if count is not None and i == count:
      break
    path = os.path.join(directory, f'{example["image/id"]}.png')
    Image.fromarray(example['image'][..., 0]).save(path)
    paths.append(path)
    truths.append(example)
  return paths, truths


def test_a_run_logs_every_coco_metric_and_records_its_detector(run):
  workdir, results = run
  assert sorted(results) == sorted(f'eval/{name}'
                                   for name in coco_eval.STAT_NAMES)
  records = metrics.read_metrics(workdir)
  assert [r['step'] for r in records] == [4, 8, 8]
  for key in ('loss', 'class_loss', 'box_loss', 'positive_anchors'):
    assert np.isfinite(records[0][f'train/{key}'])
  assert records[0]['train/positive_anchors'] > 0
  meta = checkpoint.load_meta(workdir)
  assert meta['task'] == 'detection' and meta['num_classes'] == 10
  assert meta['class_names'] == [str(d) for d in range(10)]
  assert meta['anchors'] == {'min_level': 3, 'max_level': 5,
                             'anchor_scale': 2.0}
  assert meta['preprocessing'] == {
      'image_size': 128, 'resize': 'longest_side_pad',
      'mean': list(catalog.get_spec('digits_detection').mean),
      'std': list(catalog.get_spec('digits_detection').std)}
  assert meta['postprocess']['nms_method'] == 'hard'


def test_eval_ap_equals_pycocotools_on_what_predict_finds(
    run, detection_data_dir, tmp_path):
  """Each test image once: the run's eval/AP* are pycocotools' scores of the
  detections the checkpoint gives for the same images as PNG files (an
  independent path: Pillow + numpy preprocessing, COCO JSON files)."""
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  workdir, results = run
  paths, truths = _test_images(detection_data_dir, str(tmp_path))
  assert len(paths) == 300
  detector = predict_detection.load(workdir)
  names, images, scales, sizes = predict_detection.load_inputs(detector,
                                                               paths)
  found = predict_detection.select(
      detector, names, detector.detections(images, scales, sizes, 64), 0.0)
  ground_truth = {'images': [], 'annotations': [], 'categories': [
      {'id': c + 1} for c in range(10)]}
  detections = []
  for truth, result in zip(truths, found):
    image_id = int(truth['image/id'])
    ground_truth['images'].append({'id': image_id})
    for box, label in zip(truth['objects']['bbox'] * 128,
                          truth['objects']['label']):
      y1, x1, y2, x2 = (float(v) for v in box)
      ground_truth['annotations'].append({
          'id': len(ground_truth['annotations']) + 1, 'image_id': image_id,
          'category_id': int(label) + 1, 'bbox': [x1, y1, x2 - x1, y2 - y1],
          'area': (x2 - x1) * (y2 - y1), 'iscrowd': 0})
    for (x1, y1, x2, y2), score, cls in zip(result.boxes, result.scores,
                                            result.classes):
      detections.append({'image_id': image_id, 'category_id': cls + 1,
                         'bbox': [x1, y1, x2 - x1, y2 - y1], 'score': score})
  gt_file, dt_file = tmp_path / 'gt.json', tmp_path / 'dt.json'
  gt_file.write_text(json.dumps(ground_truth))
  dt_file.write_text(json.dumps(detections))
  with contextlib.redirect_stdout(io.StringIO()):
    coco = COCO(str(gt_file))
    evaluation = COCOeval(coco, coco.loadRes(str(dt_file)), 'bbox')
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
  assert len(detections) > 1000  # Untrained: many low scores, all kept.
  for name, value in zip(coco_eval.STAT_NAMES, evaluation.stats):
    # predict rounds boxes to 0.01 px and scores to 1e-4.
    assert results[f'eval/{name}'] == pytest.approx(value, abs=2e-3), name


def test_predict_writes_boxes_as_json_lines_and_draws_them(
    run, detection_data_dir, tmp_path):
  workdir, _ = run
  paths, _ = _test_images(detection_data_dir, str(tmp_path), count=2)
  output, drawn = tmp_path / 'boxes.jsonl', tmp_path / 'drawn'
  # predict.py with TensorFlow's import blocked: detectors need none.
  command = [sys.executable, '-c', test_no_tensorflow.BLOCK + (
      'import runpy\n'
      "sys.argv[0] = 'predict.py'\n"
      "runpy.run_path('predict.py', run_name='__main__')\n"),
             f'--checkpoint={workdir}', '--min_score=0.0',
             f'--output={output}', f'--draw={drawn}', *paths]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  records = [json.loads(line) for line in output.read_text().splitlines()]
  assert [r['input'] for r in records] == paths
  for record in records:
    assert len(record['boxes']) == 100  # max_detections, min_score 0.
    boxes = np.array(record['boxes'])
    assert (boxes >= 0).all() and (boxes <= 128).all()
    assert (boxes[:, 2:] >= boxes[:, :2]).all()  # x1 <= x2, y1 <= y2.
    assert record['scores'] == sorted(record['scores'], reverse=True)
    assert record['names'] == [str(c) for c in record['classes']]
  for path in paths:
    with Image.open(drawn / os.path.basename(path)) as picture:
      assert picture.size == (128, 128) and picture.mode == 'RGB'
      assert len(set(picture.getdata())) > 2  # Boxes on the grey canvas.
  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 1
  assert again.stderr.strip().splitlines()[-1] == (
      f'FATAL {output} exists; pass --overwrite to replace it.')


def test_the_exported_detector_finds_what_predict_finds(
    run, detection_data_dir, tmp_path):
  """jax.export of the run's detector, reloaded, on 3 then 2 images of other
  sizes than the input (scale and clipping inside the export)."""
  workdir, _ = run
  paths, _ = _test_images(detection_data_dir, str(tmp_path), count=3)
  for i, size in enumerate(((100, 60), (128, 200))):
    with Image.open(paths[i]) as picture:
      picture.resize(size).save(paths[i])
  out = str(tmp_path / 'detector.export')
  export.export_checkpoint(workdir, out)
  reloaded = export.load(out)
  assert [str(a) for a in reloaded.in_avals] == [
      'float32[batch,128,128,3]', 'float32[batch]', 'float32[batch,2]']
  detector = predict_detection.load(workdir)
  _, images, scales, sizes = predict_detection.load_inputs(detector, paths)
  assert sizes.tolist() == [[60, 100], [200, 128], [128, 128]]
  expected = detector.detections(images, scales, sizes, 3)
  for count in (3, 2):
    found = reloaded.call(images[:count], scales[:count], sizes[:count])
    for name in ('boxes', 'scores', 'classes', 'valid'):
      np.testing.assert_allclose(np.asarray(found[name]),
                                 getattr(expected, name)[:count], rtol=1e-5,
                                 atol=1e-4, err_msg=name)
  assert np.asarray(found['valid']).sum() == 2 * 100
  info = json.loads(open(out + export.INFO_SUFFIX).read())
  assert (info['task'], info['input_shape'], info['class_names']) == (
      'detection', [None, 128, 128, 3], [str(d) for d in range(10)])
  assert info['anchors'] == {'min_level': 3, 'max_level': 5,
                             'anchor_scale': 2.0}
  assert info['output'].startswith('dict: boxes [batch, 100, 4] x1, y1, x2')
  larger = export.export_checkpoint(workdir, out, image_size=256,
                                    overwrite=True)
  assert str(larger.in_avals[0]) == 'float32[batch,256,256,3]'
  with pytest.raises(ValueError, match=r'^image size 200: efficientdet_d0 '
                     r'takes sides that are multiples of 32 \(2\^max_level\)'):
    export.export_checkpoint(workdir, out, image_size=200, overwrite=True)


def test_the_run_step_lowers_the_detection_loss_on_a_batch(
    detection_data_dir, run):
  """The run's jitted train step, from the run's weights on one real batch
  repeated: focal + 50 x Huber loss falls to under half of its first
  value."""
  config = _config(detection_data_dir)
  task = tasks.create(config)
  model = task.model({})
  data = task.input_pipeline(model, 0, 1)
  batch = next(data.train_batches())
  mesh = sharding.create_mesh()
  schedule = optim.learning_rate_schedule(config, data.steps_per_epoch)
  tx = optim.create_optimizer(config, schedule)
  variables, _ = checkpoint.load_variables(run[0])
  state = state_lib.create(model, tx, {
      'params': variables['params'],
      'batch_stats': variables['batch_stats']}, False)
  state_sharding = sharding.state_shardings(mesh, state)
  # Placed as the step returns it, so that the step compiles once.
  state = jax.device_put(state, state_sharding)
  train_step = step_lib.make_train_step(config, task, model, schedule, mesh,
                                        state_sharding, config.num_steps)
  losses = []
  for _ in range(20):
    state, step_metrics = train_step(state, batch)
    losses.append(float(step_metrics['loss']))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.5 * losses[0], losses
