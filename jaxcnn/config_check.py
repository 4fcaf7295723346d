"""Checks a train config before any work, reporting every problem at once.

`check(config)` raises `ConfigError`, one line naming each bad field
('--config.batch_size=0: must be a positive integer; ...'), for the rules
of every field documented in `configs/base.py`. Given the device and process
counts (known once JAX has started), it also checks that the batches divide
among them. The module itself imports neither JAX nor TensorFlow: train.py
checks a config in about two seconds (the model registry loads JAX).
"""

import difflib
import math
import numbers
import os
import re
import tempfile
from typing import Any, Callable, Mapping, Sequence

from jaxcnn.data import catalog
from jaxcnn.data import image_folder

ON_NONFINITE = ('halt', 'skip')
# Derived data seeds (seed * 65_536 + shard, then * 1_000_003 + epoch) must
# stay within int64.
SEED_LIMIT = 2**27

# The reason a value is wrong ('must be ...'), or None when it is right.
Rule = Callable[[Any], str | None]


class ConfigError(ValueError):
  """A config with bad values; `problems` names each, the message joins them
  with '; ' on one line."""

  def __init__(self, problems: Sequence[str]):
    super().__init__('; '.join(problems))
    self.problems = list(problems)


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, bool) and
          math.isfinite(value))


def _integer(low: int, high: int | None = None,
             unset: str | None = None) -> Rule:
  """An int in [low, high), or -1 meaning `unset`."""
  if high is not None:
    wanted = f'an integer in [{low}, {high})'
  else:
    wanted = {0: 'a non-negative integer', 1: 'a positive integer'}.get(
        low, f'an integer >= {low}')
  if unset:
    wanted = f'-1 ({unset}) or {wanted}'

  def rule(value):
    if _is_int(value) and (
        (unset and value == -1) or
        (value >= low and (high is None or value < high))):
      return None
    return f'must be {wanted}'
  return rule


def _number(low: float, high: float | None = None, *,
            low_open: bool = False, high_open: bool = False) -> Rule:
  """A finite number in the interval from `low` to `high`."""
  if high is None:
    wanted = ('a positive number' if low == 0 and low_open else
              'a non-negative number' if low == 0 else f'a number >= {low}')
  else:
    wanted = (f'a number in {"(" if low_open else "["}{low:g}, {high:g}'
              f'{")" if high_open else "]"}')

  def rule(value):
    if _is_number(value) and (value > low if low_open else value >= low) and (
        high is None or (value < high if high_open else value <= high)):
      return None
    return f'must be {wanted}'
  return rule


def _fraction_below_one(value: Any) -> str | None:
  return _number(0, 1, high_open=True)(value)


def _boolean(value: Any) -> str | None:
  return None if isinstance(value, bool) else 'must be True or False'


def _one_of(choices: Sequence[str]) -> Rule:
  def rule(value):
    if isinstance(value, str) and value in choices:
      return None
    return f'must be one of {", ".join(choices)}'
  return rule


def _model_name(value: Any) -> str | None:
  from jaxcnn import models  # JAX: imported only when a config is checked.
  return _one_of(models.names())(value)


def _optional_path(must_exist: bool) -> Rule:
  """None or a path; a local one must be a directory if it exists, and
  exist at all when `must_exist`. Remote ones (gs://) are not checked."""
  def rule(value):
    if value is None:
      return None
    if not isinstance(value, str) or not value:
      return 'must be a non-empty path'
    if '://' in value:
      return None
    if os.path.exists(value):
      return None if os.path.isdir(value) else 'is a file, not a directory'
    return 'does not exist' if must_exist else None
  return rule


def _regex(value: Any) -> str | None:
  if not isinstance(value, str):
    return 'must be a string (a regex)'
  try:
    re.compile(value)
  except re.error as e:
    return f'is not a valid regex ({e})'
  return None


def _mapping(value: Any) -> str | None:
  if isinstance(value, Mapping) or hasattr(value, 'to_dict'):
    return None
  return 'must be a ConfigDict of model fields'


def _lowering(value: Any) -> str | None:
  """A choice, or 'auto', per kind of jaxcnn.models.lowering."""
  from jaxcnn.models import lowering  # JAX: imported only when checking.
  if _mapping(value):
    return 'must be a ConfigDict of lowering choices'
  value = dict(value.to_dict() if hasattr(value, 'to_dict') else value)
  kinds = ', '.join(lowering.CHOICES)
  if set(value) != set(lowering.CHOICES):
    return f'must have exactly the kinds {kinds}'
  for kind, choices in lowering.CHOICES.items():
    if value[kind] not in (lowering.AUTO, *choices):
      return (f'{kind} must be one of {lowering.AUTO}, {", ".join(choices)} '
              f'(got {value[kind]!r})')
  return None


def _epoch_boundaries(value: Any) -> str | None:
  if (isinstance(value, (tuple, list)) and all(map(_is_number, value)) and
      all(e >= 0 for e in value) and
      all(a < b for a, b in zip(value, value[1:]))):
    return None
  return 'must be a tuple of increasing non-negative numbers of epochs'


# Every field of configs/base.py and the rule for its own value; rules that
# relate fields are in `_related_problems`.
FIELD_RULES: dict[str, Rule] = {
    'task': lambda value: _one_of(_tasks().names())(value),
    'model': _model_name,
    'num_classes': _integer(1, unset="the dataset's class count"),
    'half_precision': _boolean,
    'model_kwargs': _mapping,
    'lowering': _lowering,
    # Read when checking: jaxcnn.search registers validation splits.
    'dataset': lambda value: _one_of(catalog.names())(value),
    'data_dir': _optional_path(must_exist=False),
    'download': _boolean,
    'val_fraction': _number(0, 1, low_open=True, high_open=True),
    'image_size': _integer(1),
    'train_crop': _one_of(catalog.TRAIN_CROPS),
    'crop_padding': _integer(0),
    'random_flip': _boolean,
    'interpolation': _one_of(catalog.INTERPOLATIONS),
    'eval_crop_fraction': _number(0, 1, low_open=True),
    'augment': _one_of(catalog.AUGMENTS),
    'randaugment_num_layers': _integer(0),
    'randaugment_magnitude': _number(0),
    'cutout_size': _integer(0),
    'shuffle_buffer': _integer(1),
    'data_shards': _integer(1, unset='one per process'),
    'batch_size': _integer(1),
    'grad_accum_steps': _integer(1),
    'eval_batch_size': _integer(1),
    'num_epochs': _number(0),
    'num_steps': _integer(0, unset='use num_epochs'),
    'warmup_epochs': _number(0),
    'warmup_steps': _integer(0, unset='use warmup_epochs'),
    'log_every_steps': _integer(1),
    'eval_every_epochs': _number(0),
    'eval_every_steps': _integer(1, unset='use eval_every_epochs'),
    'checkpoint_every_steps': _integer(1),
    # 0 would keep nothing: the run could be neither resumed nor used.
    'keep_checkpoints': _integer(1),
    'optimizer': lambda value: _one_of(_optim().OPTIMIZERS)(value),
    # 0 is allowed: training then only updates BatchNorm statistics.
    'learning_rate': _number(0),
    'lr_batch_size': _integer(0),
    'momentum': _fraction_below_one,
    'nesterov': _boolean,
    'rmsprop_decay': _fraction_below_one,
    'rmsprop_epsilon': _number(0, low_open=True),
    'adam_b1': _fraction_below_one,
    'adam_b2': _fraction_below_one,
    'schedule': lambda value: _one_of(_optim().SCHEDULES)(value),
    # Above 1 grows the rate: tests/test_reliability.py diverges a run so.
    'lr_decay_rate': _number(0, low_open=True),
    'lr_decay_epochs': _number(0, low_open=True),
    'lr_boundaries_epochs': _epoch_boundaries,
    'weight_decay': _number(0),
    'weight_decay_mode': lambda value: _one_of(
        _optim().WEIGHT_DECAY_MODES)(value),
    'label_smoothing': _fraction_below_one,
    'mixup_alpha': _number(0),
    'cutmix_alpha': _number(0),
    'mixup_prob': _number(0, 1),
    'mixup_switch_prob': _number(0, 1),
    'aux_loss_weight': _number(0),
    'grad_clip_norm': _number(0),
    'ema_decay': _fraction_below_one,
    'freeze': _regex,
    'seed': _integer(0, SEED_LIMIT),
    # Must exist unless the run resumes (see `problems`).
    'init_from': _optional_path(must_exist=False),
    'progress_bar': _boolean,
    'deterministic': _boolean,
    'on_nonfinite': _one_of(ON_NONFINITE),
}


def _positive_or_unset(unset: str) -> Rule:
  def rule(value):
    if value == -1 or (_is_number(value) and value > 0):
      return None
    return f'must be -1 ({unset}) or a positive number'
  return rule


# The fields only a task's configs have (its recipes add them), by task.
TASK_FIELD_RULES: dict[str, dict[str, Rule]] = {
    'detection': {
        'max_boxes': _integer(1),
        'jitter_min': _number(0, low_open=True),
        'jitter_max': _number(0, low_open=True),
        'anchor_scale': _positive_or_unset("the model's"),
        'box_loss_weight': _number(0),
        'max_candidates': _integer(1),
        'max_detections': _integer(1),
        'nms_iou_threshold': _number(0, 1, low_open=True),
        'nms_method': lambda value: _one_of(
            _postprocess().NMS_METHODS)(value),
        'soft_nms_sigma': _number(0, low_open=True),
    },
}


def _tasks():
  from jaxcnn import tasks  # JAX: imported only when checking.
  return tasks


def _postprocess():
  from jaxcnn.detection import postprocess  # JAX: imported when checking.
  return postprocess


def _optim():
  from jaxcnn import optim  # JAX and optax: imported only when checking.
  return optim


def _show(value: Any) -> str:
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  return ' '.join(repr(value).split())


def _problem(config: Any, field: str, reason: str) -> str:
  return f'--config.{field}={_show(config[field])}: {reason}'


def _dataset_spec(config: Any, valid: set[str],
                  problems: list[str]) -> catalog.DatasetSpec | None:
  """The spec of the run's dataset, or None when it cannot be known; an
  image folder's is read from data_dir, whose problems are added."""
  if 'dataset' not in valid:
    return None
  if config['dataset'] != catalog.IMAGE_FOLDER:
    return catalog.get_spec(config['dataset'])
  if 'data_dir' not in valid:
    return None
  data_dir = config['data_dir']
  if data_dir is None or '://' in data_dir:
    reason = (f'--config.dataset={catalog.IMAGE_FOLDER} needs the local '
              'folder of your images, DIR with DIR/train/<class>/*')
  else:
    try:
      image_folder.check(data_dir)
      return catalog.get_spec(catalog.IMAGE_FOLDER, data_dir)
    except image_folder.ImageFolderError as e:
      reason = str(e).rstrip('.')
  problems.append(_problem(config, 'data_dir', reason))
  return None


def _related_problems(config: Any, valid: set[str]) -> list[str]:
  """Rules between fields whose own values are `valid`."""
  problems = []
  for used, steps in (('num_epochs', 'num_steps'),
                      ('eval_every_epochs', 'eval_every_steps')):
    if {used, steps} <= valid and config[steps] < 0 and config[used] <= 0:
      problems.append(_problem(config, used, f'must be positive when '
                               f'--config.{steps} is -1'))
  if {'batch_size', 'grad_accum_steps'} <= valid and (
      config['batch_size'] % config['grad_accum_steps']):
    problems.append(_problem(config, 'grad_accum_steps', 'must divide '
                             f"--config.batch_size ({config['batch_size']})"))
  if {'jitter_min', 'jitter_max'} <= valid and (
      config['jitter_min'] > config['jitter_max']):
    problems.append(_problem(config, 'jitter_min', 'must be at most '
                             f"--config.jitter_max ({config['jitter_max']})"))
  spec = _dataset_spec(config, valid, problems)
  task = config['task'] if 'task' in valid else 'classification'
  # A task with datasets of its own takes only those (a test's task reading
  # digits has none).
  if spec and catalog.names(task) and spec.task != task:
    problems.append(_problem(
        config, 'dataset', f'is a {spec.task} dataset; the {task} task '
        f"takes one of {', '.join(catalog.names(task))}"))
    spec = None
  if spec and 'num_classes' in valid and 0 < config['num_classes'] < (
      spec.num_classes):
    problems.append(_problem(
        config, 'num_classes',
        f"{config['dataset']} has {spec.num_classes} classes (labels 0-"
        f'{spec.num_classes - 1}); use -1 for its count or at least '
        f'{spec.num_classes}'))
  if {'model', 'model_kwargs', 'num_classes'} <= valid:
    from jaxcnn import models
    kwargs = config['model_kwargs']
    kwargs = dict(kwargs.to_dict() if hasattr(kwargs, 'to_dict') else kwargs)
    num_classes = (config['num_classes'] if config['num_classes'] > 0 else
                   spec.num_classes if spec else 1000)
    # A task with registered models takes only those (one building its own
    # network, as a test's, has none).
    if models.names(task) and models.task_of(config['model']) != task:
      problems.append(_problem(
          config, 'model',
          f"is a {models.task_of(config['model'])} model; the {task} task "
          f"takes one of {', '.join(models.names(task))}"))
      return problems
    try:
      module = models.create(config['model'], num_classes=num_classes,
                             **kwargs)
      if isinstance(kwargs.get('genotype'), str):  # NASNet: parsed at init.
        from jaxcnn.models import genotype
        genotype.parse(kwargs['genotype'])
    except ValueError as e:
      problems.append(_problem(config, 'model_kwargs',
                               str(e).rstrip('.')))
    else:
      side = 2**getattr(module, 'max_level', 0)
      if 'image_size' in valid and config['image_size'] % side:
        problems.append(_problem(
            config, 'image_size', f"must be a multiple of {side} for "
            f"{config['model']}'s levels up to {module.max_level}"))
      if ('augment' in valid and config['augment'] != 'none' and
          module.in_channels != 3):
        problems.append(_problem(
            config, 'augment', f"needs RGB images; {config['model']} takes "
            f'{module.in_channels} channel(s)'))
  return problems


def _parallel_problems(config: Any, valid: set[str], device_count: int,
                       process_count: int) -> list[str]:
  """The batches must divide among devices, processes and data shards."""
  problems = []
  shards = process_count
  if 'data_shards' in valid and config['data_shards'] > 0:
    shards = config['data_shards']
    if shards % process_count:
      problems.append(_problem(config, 'data_shards', 'must be a multiple of '
                               f'the process count ({process_count})'))
  for field in ('batch_size', 'eval_batch_size'):
    if field not in valid:
      continue
    parts = [('the device count', device_count),
             ('the process count', process_count)]
    if field == 'batch_size':
      parts.append(('the number of data shards', shards))
    failed = [f'{name} ({count})' for name, count in parts
              if config[field] % count]
    if failed:
      problems.append(_problem(config, field, 'must be divisible by ' +
                               ' and '.join(failed)))
  if {'batch_size', 'grad_accum_steps'} <= valid:
    batch, steps = config['batch_size'], config['grad_accum_steps']
    if not batch % steps and not batch % device_count and (
        batch // steps % device_count):
      problems.append(_problem(
          config, 'grad_accum_steps', f'must leave microbatches (--config.'
          f'batch_size={batch} / {steps} = {batch // steps}) divisible by '
          f'the device count ({device_count})'))
  return problems


def _has_checkpoints(workdir: str | None) -> bool:
  directory = os.path.join(workdir, 'checkpoints') if workdir else ''
  return bool(directory) and os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def problems(config: Any, device_count: int | None = None,
             process_count: int | None = None,
             workdir: str | None = None) -> list[str]:
  """Every problem of the train `config` (a ConfigDict or mapping), each
  naming its field; [] for a good one.

  With `device_count` and `process_count` (the global counts of the run),
  also checks that the batches and data shards divide among them. The
  weights of `init_from` must exist unless `workdir` holds checkpoints to
  resume from (which record what the run needs of them).
  """
  found = []
  valid = set()
  task = config.get('task', 'classification')
  rules = {**FIELD_RULES, **TASK_FIELD_RULES.get(task, {})}
  for field, rule in rules.items():
    if field not in config:
      where = ('configs/base.py' if field in FIELD_RULES else
               f'the {task} recipes, e.g. configs/efficientdet.py')
      found.append(f'--config.{field}: missing (see {where})')
      continue
    reason = rule(config[field])
    if reason:
      found.append(_problem(config, field, reason))
    else:
      valid.add(field)
  for field in config.keys():
    if field in rules:
      continue
    owner = [name for name, fields in TASK_FIELD_RULES.items()
             if field in fields]
    if owner:
      found.append(f'--config.{field}: a field of --config.task={owner[0]} '
                   f'configs, not of task {task!r}')
      continue
    close = difflib.get_close_matches(field, rules, n=1)
    found.append(f'--config.{field}: unknown field' +
                 (f' (did you mean {close[0]}?)' if close else ''))
  init_from = config.get('init_from') if 'init_from' in valid else None
  if (init_from and '://' not in init_from and not os.path.exists(init_from)
      and not _has_checkpoints(workdir)):
    found.append(_problem(config, 'init_from', 'does not exist'))
  found += _related_problems(config, valid)
  if device_count is not None and process_count is not None:
    found += _parallel_problems(config, valid, device_count, process_count)
  return found


def check(config: Any, device_count: int | None = None,
          process_count: int | None = None,
          workdir: str | None = None) -> None:
  """Raises ConfigError listing every problem `problems` finds."""
  found = problems(config, device_count, process_count, workdir)
  if found:
    raise ConfigError(found)


def output_dir_problem(path: str, must_be_empty: bool = False) -> str | None:
  """Why the local directory `path` cannot be written (or created), as
  'it is a file', '/a is not writable', ...; None when it can.

  Creates nothing. Remote paths (gs://...) are not checked.
  """
  if not path:
    return 'no path given'
  if '://' in path:
    return None
  if os.path.exists(path):
    if not os.path.isdir(path):
      return 'it is a file'
    if must_be_empty and os.listdir(path):
      return 'it exists and is not empty'
    existing = path
  else:
    existing = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
      return f'{existing} is a file'
  try:  # os.access says yes to root even on a read-only filesystem.
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    return f'{existing} is not writable ({e.strerror or e})'
  return None
