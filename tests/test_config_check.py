"""config_check: one rule per config field, every problem at once."""

import importlib
import os

import pytest

from configs import base
from configs import efficientdet_quickstart
from configs import quickstart
from jaxcnn import config_check
from tests import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A_FILE = os.path.abspath(__file__)


def _config(**overrides):
  """The quickstart recipe (LeNet-5 on digits) as a plain dict, so that any
  value, of any type, can be set."""
  config = quickstart.get_config().to_dict()
  config.update(overrides)
  return config


def test_every_field_of_base_has_a_rule():
  assert set(config_check.FIELD_RULES) == set(base.get_config().keys())


@pytest.mark.parametrize('recipe', recipes.NAMES)
def test_every_recipe_passes(recipe, tmp_path):
  config = importlib.import_module(f'configs.{recipe}').get_config()
  if config.dataset == 'image_folder':  # Given the user's folder.
    for name in ('cats', 'dogs'):
      os.makedirs(tmp_path / 'train' / name)
      (tmp_path / 'train' / name / '0.jpg').touch()
    config.data_dir = str(tmp_path)
  assert config_check.problems(config, 1, 1) == []


# Each row: overrides of the quickstart config, and how its one problem
# starts after '--config.FIELD=VALUE: ' (FIELD: the last override).
BAD = [
    (dict(model='resnet51'), 'must be one of alexnet, efficientdet_d0'),
    (dict(model='efficientdet_d0'),
     'is a detection model; the classification task takes one of alexnet, '
     'efficientnet_b0'),
    (dict(num_classes=0),
     "must be -1 (the dataset's class count) or a positive integer"),
    (dict(num_classes=3), 'digits has 10 classes (labels 0-9); use -1 for '
     'its count or at least 10'),
    (dict(half_precision='yes'), 'must be True or False'),
    (dict(model_kwargs={'depth': 3}),
     "Model 'lenet5' has no field(s) ['depth']. Its fields are: dtype"),
    (dict(model_kwargs=3), 'must be a ConfigDict of model fields'),
    (dict(lowering=dict(depthwise='cudnn', pointwise='auto',
                        small_output_conv='auto', max_pool_backward='auto')),
     "depthwise must be one of auto, conv, taps, pallas (got 'cudnn')"),
    (dict(lowering=dict(depthwise='auto')), 'must have exactly the kinds '
     'depthwise, pointwise, small_output_conv, max_pool_backward'),
    (dict(dataset='cifar11'),
     'must be one of cifar10, cifar100, coco/2017, digits'),
    (dict(dataset='digits_detection'), 'is a detection dataset; the '
     'classification task takes one of cifar10, cifar100, digits,'),
    (dict(data_dir=A_FILE), 'is a file, not a directory'),
    (dict(data_dir=''), 'must be a non-empty path'),
    (dict(download=1), 'must be True or False'),
    (dict(dataset='image_folder', data_dir=None),
     '--config.dataset=image_folder needs the local folder of your images'),
    (dict(val_fraction=0.0), 'must be a number in (0, 1)'),
    (dict(val_fraction=1.0), 'must be a number in (0, 1)'),
    (dict(image_size=0), 'must be a positive integer'),
    (dict(train_crop='center'),
     'must be one of random_resized, pad_and_crop, resize'),
    (dict(crop_padding=-1), 'must be a non-negative integer'),
    (dict(random_flip='no'), 'must be True or False'),
    (dict(interpolation='lanczos'),
     'must be one of bilinear, bicubic, nearest, area'),
    (dict(eval_crop_fraction=0.0), 'must be a number in (0, 1]'),
    (dict(eval_crop_fraction=1.5), 'must be a number in (0, 1]'),
    (dict(augment='mixup'), 'must be one of none, randaugment, autoaugment'),
    (dict(augment='randaugment'), 'needs RGB images; lenet5 takes 1 '
     'channel(s)'),
    (dict(randaugment_num_layers=-1), 'must be a non-negative integer'),
    (dict(randaugment_magnitude=float('nan')),
     'must be a non-negative number'),
    (dict(shuffle_buffer=0), 'must be a positive integer'),
    (dict(data_shards=0), 'must be -1 (one per process) or a positive'),
    (dict(batch_size=0), 'must be a positive integer'),
    (dict(batch_size=-8), 'must be a positive integer'),
    (dict(batch_size=2.5), 'must be a positive integer'),
    (dict(batch_size=True), 'must be a positive integer'),
    (dict(grad_accum_steps=0), 'must be a positive integer'),
    (dict(grad_accum_steps=3), 'must divide --config.batch_size (64)'),
    (dict(eval_batch_size=0), 'must be a positive integer'),
    (dict(num_epochs=-1.0), 'must be a non-negative number'),
    (dict(num_epochs=0.0), 'must be positive when --config.num_steps is -1'),
    (dict(num_steps=-2), 'must be -1 (use num_epochs) or a non-negative'),
    (dict(warmup_epochs=-1.0), 'must be a non-negative number'),
    (dict(warmup_steps=1.5), 'must be -1 (use warmup_epochs) or a non-'),
    (dict(log_every_steps=0), 'must be a positive integer'),
    (dict(eval_every_epochs=0.0),
     'must be positive when --config.eval_every_steps is -1'),
    (dict(eval_every_steps=0),
     'must be -1 (use eval_every_epochs) or a positive integer'),
    (dict(checkpoint_every_steps=0), 'must be a positive integer'),
    (dict(keep_checkpoints=0), 'must be a positive integer'),
    (dict(optimizer='adam'), 'must be one of sgd, rmsprop, adamw'),
    (dict(learning_rate=-0.1), 'must be a non-negative number'),
    (dict(learning_rate=float('inf')), 'must be a non-negative number'),
    (dict(lr_batch_size=-1), 'must be a non-negative integer'),
    (dict(momentum=1.0), 'must be a number in [0, 1)'),
    (dict(nesterov='y'), 'must be True or False'),
    (dict(rmsprop_decay=1.0), 'must be a number in [0, 1)'),
    (dict(rmsprop_epsilon=0.0), 'must be a positive number'),
    (dict(adam_b1=1.0), 'must be a number in [0, 1)'),
    (dict(adam_b2=-0.1), 'must be a number in [0, 1)'),
    (dict(schedule='linear'),
     'must be one of cosine, exponential, multistep, constant'),
    (dict(lr_decay_rate=0.0), 'must be a positive number'),
    (dict(lr_decay_epochs=0.0), 'must be a positive number'),
    (dict(lr_boundaries_epochs=(60.0, 30.0)),
     'must be a tuple of increasing non-negative numbers of epochs'),
    (dict(lr_boundaries_epochs=(-1.0,)), 'must be a tuple of increasing'),
    (dict(lr_boundaries_epochs=30.0), 'must be a tuple of increasing'),
    (dict(weight_decay=-1e-4), 'must be a non-negative number'),
    (dict(weight_decay_mode='l1'), 'must be one of l2, decoupled'),
    (dict(label_smoothing=1.0), 'must be a number in [0, 1)'),
    (dict(mixup_alpha=-0.2), 'must be a non-negative number'),
    (dict(cutmix_alpha=float('inf')), 'must be a non-negative number'),
    (dict(mixup_prob=1.5), 'must be a number in [0, 1]'),
    (dict(mixup_switch_prob=-0.1), 'must be a number in [0, 1]'),
    (dict(grad_clip_norm=-1.0), 'must be a non-negative number'),
    (dict(ema_decay=1.0), 'must be a number in [0, 1)'),
    (dict(freeze='layer1_0/(bn'), 'is not a valid regex (missing ), '
     'unterminated subpattern'),
    (dict(freeze=None), 'must be a string (a regex)'),
    (dict(seed=-1), 'must be an integer in [0, 134217728)'),
    (dict(seed=2**27), 'must be an integer in [0, 134217728)'),
    (dict(init_from='/no/such/run'), 'does not exist'),
    (dict(progress_bar='x'), 'must be True or False'),
    (dict(deterministic=1), 'must be True or False'),
    (dict(on_nonfinite='ignore'), 'must be one of halt, skip'),
]


@pytest.mark.parametrize('overrides,reason', BAD)
def test_a_bad_value_is_one_problem_naming_its_field(overrides, reason):
  config = _config(**overrides)
  field = list(overrides)[-1]
  problems = config_check.problems(config)
  assert len(problems) == 1, problems
  assert problems[0].startswith(
      f'--config.{field}={config[field]!r}: {reason}')


GOOD = [
    dict(num_steps=0),  # Evaluates the initial weights.
    dict(num_epochs=0.0, num_steps=10),  # Non-negative steps win.
    dict(eval_every_epochs=0.0, eval_every_steps=5),
    dict(warmup_epochs=0.0, warmup_steps=0),
    dict(learning_rate=0.0),  # Only BatchNorm statistics move.
    dict(learning_rate=1),  # An int where a float is expected.
    dict(eval_crop_fraction=1.0, label_smoothing=0.0, ema_decay=0.0),
    dict(num_classes=-1),
    dict(num_classes=12),  # More outputs than labels is harmless.
    dict(data_dir='/no/such/dir'),  # Says how to prepare it, later.
    dict(data_dir='gs://bucket/tfds', init_from='gs://bucket/run'),
    dict(init_from=ROOT),
    dict(seed=2**27 - 1),
    dict(freeze='conv1|layer1_'),
    dict(lr_boundaries_epochs=(), schedule='multistep'),
    dict(data_shards=4),
    dict(model='resnet18', lowering=dict(
        depthwise='taps', pointwise='conv', small_output_conv='im2col',
        max_pool_backward='auto'), augment='autoaugment'),
]


@pytest.mark.parametrize('overrides', GOOD)
def test_good_values_at_the_edges_pass(overrides):
  assert config_check.problems(_config(**overrides)) == []


def test_a_missing_and_an_unknown_field_are_named():
  config = _config(learnig_rate=0.1)
  del config['seed']
  assert config_check.problems(config) == [
      '--config.seed: missing (see configs/base.py)',
      '--config.learnig_rate: unknown field (did you mean learning_rate?)']


def test_every_problem_is_reported_at_once_on_one_line():
  config = _config(batch_size=0, log_every_steps=0, optimizer='adam',
                   num_classes=3, data_dir=A_FILE)
  with pytest.raises(config_check.ConfigError) as raised:
    config_check.check(config)
  message = str(raised.value)
  assert '\n' not in message
  assert len(raised.value.problems) == 5
  assert message == '; '.join(raised.value.problems)
  for field in ('batch_size', 'log_every_steps', 'optimizer', 'num_classes',
                'data_dir'):
    assert f'--config.{field}=' in message
  assert isinstance(raised.value, ValueError)  # train.py's one-line path.


def _detection_config(**overrides):
  config = efficientdet_quickstart.get_config().to_dict()
  config.update(overrides)
  return config


def test_every_detection_field_has_a_rule():
  config = efficientdet_quickstart.get_config()
  assert set(config.keys()) == (
      set(config_check.FIELD_RULES) |
      set(config_check.TASK_FIELD_RULES['detection']))


DETECTION_BAD = [
    (dict(max_boxes=0), 'must be a positive integer'),
    (dict(jitter_min=0.0), 'must be a positive number'),
    (dict(jitter_min=1.5, jitter_max=1.2),
     'must be at most --config.jitter_max (1.2)'),
    (dict(anchor_scale=0), "must be -1 (the model's) or a positive number"),
    (dict(nms_method='greedy'), 'must be one of hard, soft'),
    (dict(nms_iou_threshold=1.5), 'must be a number in (0, 1]'),
    (dict(max_detections=0), 'must be a positive integer'),
    (dict(image_size=100),
     "must be a multiple of 32 for efficientdet_d0's levels up to 5"),
    (dict(dataset='digits'), 'is a classification dataset; the detection '
     'task takes one of coco/2017, digits_detection, voc/2007'),
    (dict(model='resnet50'), 'is a classification model; the detection task '
     'takes one of efficientdet_d0, efficientdet_d1'),
]


@pytest.mark.parametrize('overrides,reason', DETECTION_BAD)
def test_a_bad_detection_value_is_one_problem_naming_its_field(overrides,
                                                              reason):
  config = _detection_config(**overrides)
  field = list(overrides)[0]
  problems = config_check.problems(config)
  assert len(problems) == 1, problems
  assert problems[0].startswith(
      f'--config.{field}={config[field]!r}: {reason}')


def test_detection_fields_belong_to_detection_configs_only():
  config = _config(max_boxes=100)
  assert config_check.problems(config) == [
      "--config.max_boxes: a field of --config.task=detection configs, not "
      "of task 'classification'"]
  config = _detection_config()
  del config['nms_method']
  assert config_check.problems(config) == [
      '--config.nms_method: missing (see the detection recipes, e.g. '
      'configs/efficientdet.py)']


@pytest.mark.parametrize('overrides,devices,processes,expected', [
    (dict(batch_size=32, eval_batch_size=32), 8, 2, []),
    (dict(batch_size=30), 4, 1,
     ['--config.batch_size=30: must be divisible by the device count (4)']),
    (dict(eval_batch_size=7), 2, 2,
     ['--config.eval_batch_size=7: must be divisible by the device count '
      '(2) and the process count (2)']),
    (dict(data_shards=3, batch_size=32), 2, 2,
     ['--config.data_shards=3: must be a multiple of the process count (2)',
      '--config.batch_size=32: must be divisible by the number of data '
      'shards (3)']),
    (dict(data_shards=6, batch_size=24, eval_batch_size=24), 2, 2, []),
])
def test_batches_must_divide_among_devices_processes_and_shards(
    overrides, devices, processes, expected):
  config = _config(**overrides)
  assert config_check.problems(config, devices, processes) == expected
  # Without the counts (before JAX starts) nothing is said about them.
  assert config_check.problems(config) == []


@pytest.mark.parametrize('setup,must_be_empty,expected', [
    ('missing', False, None),
    ('empty', True, None),
    ('full', False, None),  # A workdir holding a run: resumed.
    ('full', True, 'it exists and is not empty'),
    ('file', False, 'it is a file'),
    ('under_file', False, '{tmp}/file is a file'),
    ('remote', True, None),
])
def test_output_dir_problem(setup, must_be_empty, expected, tmp_path):
  (tmp_path / 'file').write_text('keep me')
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'config.json').write_text('{}')
  (tmp_path / 'empty').mkdir()
  path = {'missing': f'{tmp_path}/missing/run',
          'under_file': f'{tmp_path}/file/run',
          'remote': 'gs://bucket/run'}.get(setup, f'{tmp_path}/{setup}')
  problem = config_check.output_dir_problem(path, must_be_empty)
  assert problem == (expected and expected.format(tmp=tmp_path))
  assert not os.path.exists(f'{tmp_path}/missing')  # Creates nothing.
