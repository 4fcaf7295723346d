"""A checkpoint's evaluation on a dataset split, per class, behind evaluate.py.

The run's own evaluation: its task's input pipeline (every example once, the
last batch padded and masked) and eval step, jitted over the device mesh, to
which the step adds a confusion matrix summed on device, so that padded
batches and several processes count every example exactly once. Per-class
precision, recall and F1 are scikit-learn's of the matrix's (label,
prediction) pairs. Converted weights (`python -m jaxcnn.convert`) are
evaluated on `dataset` with the preprocessing they record.

Instead of a split, `files` (`jaxcnn.labelled_files`: a folder of class
folders, or a .npy batch with its labels) go through the same eval step,
without TensorFlow.

Optionally the weights are compressed first (`jaxcnn.compress`: int8,
pruning) and the report compares them with the float model.

TensorFlow (the datasets) is imported only when a split is read.
"""

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib import figure as figure_lib
from sklearn import metrics as sk_metrics

from jaxcnn import checkpoint
from jaxcnn import compress
from jaxcnn import labelled_files
from jaxcnn import predict
from jaxcnn import sharding
from jaxcnn import step as step_lib
from jaxcnn import workdir
from jaxcnn.data import catalog
from jaxcnn.tasks import base
from jaxcnn.tasks import classification

REPORT_JSON = 'report.json'
REPORT_MD = 'report.md'
CONFUSION_PNG = 'confusion_matrix.png'
OUTPUTS = (REPORT_JSON, REPORT_MD, CONFUSION_PNG)
# Above these class counts the picture leaves out the counts, then the names.
_ANNOTATED_CLASSES = 20
_NAMED_CLASSES = 50


class _WithConfusion(base.Evaluator):
  """The task's evaluator, and the sum of the batches' confusion matrices."""

  def __init__(self, metrics: base.Evaluator):
    self._metrics = metrics
    self._confusion = None

  def add(self, outputs: dict[str, jax.Array]) -> None:
    outputs = dict(outputs)
    confusion = outputs.pop('confusion')
    self._metrics.add(outputs)
    self._confusion = (confusion if self._confusion is None
                       else self._confusion + confusion)

  def result(self) -> dict[str, float]:
    return self._metrics.result()

  def confusion_matrix(self) -> np.ndarray:
    """Counts `[true class, predicted class]`."""
    return np.asarray(jax.device_get(self._confusion))


class ConfusionClassification(classification.Classification):
  """The classification task whose eval step also counts each (label,
  prediction) pair of the batch's real (mask 1) examples."""

  def eval_outputs(self, outputs: jax.Array,
                   batch: base.Batch) -> dict[str, jax.Array]:
    logits = outputs.astype(jnp.float32)
    classes = logits.shape[-1]
    confusion = jnp.zeros((classes, classes), jnp.int32).at[
        batch['label'], jnp.argmax(logits, -1)].add(
            batch['mask'].astype(jnp.int32))
    return {**super().eval_outputs(outputs, batch), 'confusion': confusion}

  def evaluator(self) -> _WithConfusion:
    return _WithConfusion(super().evaluator())


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The task's metrics (accuracy, top5, loss) and the confusion matrix."""
  metrics: dict[str, float]
  confusion: np.ndarray


def check_output(output: str, overwrite: bool) -> None:
  """Raises unless `output` is a new or empty directory, or (with
  `overwrite`) one holding only an earlier report."""
  if not os.path.exists(output):
    return
  if not os.path.isdir(output):
    raise ValueError(f'--output={output}: is a file; pass a directory.')
  entries = sorted(os.listdir(output))
  others = [e for e in entries if e not in OUTPUTS]
  if others:
    raise ValueError(f'--output={output}: holds other files '
                     f'({", ".join(others[:3])}{", ..." * (len(others) > 3)}'
                     '); pass a new or empty directory.')
  if entries and not overwrite:
    raise FileExistsError(f'--output={output}: holds an earlier report; pass '
                          '--overwrite to replace it.')


def run_config(path: str,
               meta: dict[str, Any]) -> ml_collections.ConfigDict | None:
  """The config of the training run that wrote the checkpoint at `path`;
  None for weights of no run (jaxcnn.convert output)."""
  try:
    return predict.train_config(path, meta)
  except FileNotFoundError:
    return None


def data_config(path: str, meta: dict[str, Any],
                predictor: predict.Predictor,
                trained: ml_collections.ConfigDict | None,
                dataset: str | None, data_dir: str | None,
                batch_size: int | None,
                files: bool = False) -> ml_collections.ConfigDict:
  """The `trained` run's config (fields added since it was saved take the
  values that reproduce it) or, for converted weights, the recipes'
  defaults with their model and preprocessing; `dataset`, `data_dir` and the
  eval `batch_size` replace its own. Converted weights need a `dataset`
  unless they are evaluated on `files`."""
  if trained is not None:
    fields = {**workdir.ADDED_FIELDS, **trained.to_dict()}
  else:
    if dataset is None and not files:
      raise ValueError(f'--checkpoint={path}: holds weights of no training '
                       'run (e.g. jaxcnn.convert output); pass '
                       '--dataset=NAME (and --data_dir=DIR) to evaluate them.')
    # Weights of no run: every data field from the recipes' defaults,
    # beside the package (as train.py has them).
    from configs import base as base_config
    fields = base_config.get_config().to_dict()
    fields['model'] = meta['model']
    prep = predictor.preprocessing
    if prep is not None:
      fields.update(image_size=prep.image_size,
                    eval_crop_fraction=prep.crop_fraction,
                    interpolation=prep.interpolation)
    elif not files:
      raise ValueError(f'--checkpoint={path}: records no preprocessing for '
                       'images, so it cannot be evaluated on a dataset.')
  config = ml_collections.ConfigDict(fields)
  config.num_classes = meta['num_classes']  # The model's outputs.
  if dataset is not None:
    try:
      catalog.get_spec(dataset)
    except ValueError as e:
      raise ValueError(f'--dataset={dataset}: {e}') from None
    config.dataset = dataset
  if data_dir is not None:
    config.data_dir = data_dir
  if batch_size is not None:
    config.eval_batch_size = batch_size
  # Train batches are never read; any size the processes divide will do.
  config.batch_size = config.eval_batch_size
  return config


def eval_data(config: ml_collections.ConfigDict,
              task: classification.Classification,
              predictor: predict.Predictor, split: str | None,
              converted: bool) -> base.InputPipeline:
  """The task's pipeline, reading `split` (default the run's eval split);
  converted weights' images are normalised with their recorded statistics."""
  # TensorFlow: imported only to read a split.
  from jaxcnn.data import classification as examples_lib
  from jaxcnn.data import datasets
  try:
    data = task.input_pipeline(predictor.model, jax.process_index(),
                               jax.process_count())
  except datasets.DatasetNotPreparedError as e:
    raise ValueError(f'--data_dir={config.data_dir}: {e}') from None
  changes: dict[str, Any] = {}
  if split is not None:
    try:  # A split's name, or a slice of it such as train[:10%].
      examples = data.builder.info.splits[split].num_examples
    except ValueError as e:
      raise ValueError(f'--split={split}: {str(e).splitlines()[0]}') from None
    if not examples:
      raise ValueError(f'--split={split}: holds no examples.')
    changes['eval_split'] = split
  if converted:
    spec = dataclasses.replace(catalog.get_spec(config.dataset),
                               mean=predictor.preprocessing.mean,
                               std=predictor.preprocessing.std)
    changes['eval_example'] = examples_lib.Examples(
        config, spec, predictor.model.in_channels).eval
  label_classes = data.builder.info.features['label'].num_classes
  if label_classes > task.num_classes:
    raise ValueError(f'--dataset={config.dataset} has {label_classes} '
                     f'classes; the model predicts {task.num_classes}.')
  return dataclasses.replace(data, **changes) if changes else data


def evaluate(task: ConfusionClassification, eval_fn: Any, variables: Any,
             eval_batches: Callable[[], Iterable[dict[str, Any]]],
             mesh: jax.sharding.Mesh) -> Evaluation:
  """The task's metrics and confusion matrix of `variables` over every
  eval example once (this process's part of each padded batch from
  `eval_batches()`)."""
  evaluator = task.evaluator()
  batch_sharding = sharding.batch_sharding(mesh)
  for batch in eval_batches():
    evaluator.add(eval_fn(variables,
                          sharding.global_batch(batch, batch_sharding)))
  return Evaluation(evaluator.result(), evaluator.confusion_matrix())


def class_scores(confusion: np.ndarray,
                 names: Sequence[str]) -> dict[str, Any]:
  """scikit-learn's precision, recall, F1 and support per class (every class
  of the matrix) and their macro and weighted averages (over the classes
  that are labels or predictions, scikit-learn's default), of the (label,
  prediction) pairs that `confusion` counts."""
  classes = len(confusion)
  counts = confusion.ravel()
  true = np.repeat(np.arange(classes).repeat(classes), counts)
  predicted = np.repeat(np.tile(np.arange(classes), classes), counts)
  per_class = sk_metrics.precision_recall_fscore_support(
      true, predicted, labels=np.arange(classes), zero_division=0)
  scores: dict[str, Any] = {'per_class': [
      {'name': name, 'precision': float(p), 'recall': float(r),
       'f1': float(f), 'support': int(s)}
      for name, p, r, f, s in zip(names, *per_class)]}
  for average in ('macro', 'weighted'):
    p, r, f, _ = sk_metrics.precision_recall_fscore_support(
        true, predicted, average=average, zero_division=0)
    scores[f'{average}_avg'] = {'precision': float(p), 'recall': float(r),
                                'f1': float(f), 'support': int(counts.sum())}
  return scores


def _row(name: str, scores: dict[str, Any]) -> str:
  return (f'| {name} | {scores["precision"]:.4f} | {scores["recall"]:.4f} | '
          f'{scores["f1"]:.4f} | {scores["support"]} |')


def _source(report: dict[str, Any], quote: str = '`') -> str:
  """What was evaluated: 'digits `test`', or the files."""
  if report.get('files') is None:
    return f'{report["dataset"]} {quote}{report["split"]}{quote}'
  labels = report.get('labels')
  return f'{quote}{report["files"]}{quote}' + (
      f' labelled by {quote}{labels}{quote}' if labels else '')


def format_markdown(report: dict[str, Any]) -> str:
  """report.md: the summary, the per-class table and, with compression, the
  comparison with the float model."""
  weights = 'EMA weights' if report['use_ema'] else 'weights'
  step = f' (step {report["step"]})' if report.get('step') is not None else ''
  lines = [
      f'# {report["model"]} on {_source(report)}', '',
      f'{weights} of `{report["checkpoint"]}`{step}: {report["examples"]} '
      f'examples, accuracy {report["accuracy"]:.4f}, top-5 '
      f'{report["top5"]:.4f}, loss {report["loss"]:.4f}.', '',
      '| class | precision | recall | f1 | support |',
      '|---|---:|---:|---:|---:|',
      *(_row(c['name'], c) for c in report['per_class']),
      _row('macro avg', report['macro_avg']),
      _row('weighted avg', report['weighted_avg'])]
  study = report.get('compression')
  if study:
    lines += ['', '## Compression', '',
              '| weights | accuracy | top-5 | size (bytes) |',
              '|---|---:|---:|---:|']
    for label, row in (('float', study['float']),
                       (study['method'], study['compressed'])):
      lines.append(f'| {label} | {row["accuracy"]:.4f} | {row["top5"]:.4f} | '
                   f'{row["size_bytes"]:,} |')
    change = study['change']
    lines += ['', f'Change: accuracy {change["accuracy"]:+.4f}, top-5 '
              f'{change["top5"]:+.4f}, size x{change["size_ratio"]:.3f}.']
  lines += ['', f'![confusion matrix]({CONFUSION_PNG})', '']
  return '\n'.join(lines)


def confusion_figure(confusion: np.ndarray, names: Sequence[str],
                     title: str) -> figure_lib.Figure:
  """The matrix coloured by the share of each true class (row), with the
  counts written in for up to 20 classes and the names for up to 50."""
  classes = len(confusion)
  side = min(12.0, 2.5 + 0.4 * classes)
  fig = figure_lib.Figure(figsize=(side + 1.5, side), layout='constrained')
  ax = fig.subplots()
  rows = confusion.sum(axis=1, keepdims=True)
  shares = confusion / np.maximum(rows, 1)
  image = ax.imshow(shares, cmap='Blues', vmin=0.0, vmax=1.0)
  fig.colorbar(image, ax=ax, label='share of the true class')
  if classes <= _ANNOTATED_CLASSES:
    for (i, j), count in np.ndenumerate(confusion):
      if count:
        ax.text(j, i, str(count), ha='center', va='center', fontsize='small',
                color='white' if shares[i, j] > 0.5 else 'black')
  if classes <= _NAMED_CLASSES:
    ax.set_xticks(range(classes), names, rotation=90 * (classes > 10))
    ax.set_yticks(range(classes), names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  return fig


def write_report(output: str, report: dict[str, Any]) -> None:
  """report.json, report.md and confusion_matrix.png in `output`."""
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, REPORT_JSON), 'w') as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(output, REPORT_MD), 'w') as f:
    f.write(format_markdown(report))
  confusion_figure(
      np.asarray(report['confusion_matrix']),
      [c['name'] for c in report['per_class']],
      f'{report["model"]} on {_source(report, quote="")}: '
      f'accuracy {report["accuracy"]:.4f}').savefig(
          os.path.join(output, CONFUSION_PNG), dpi=100)


def _class_names(predictor: predict.Predictor, classes: int,
                 data: Any = None) -> list[str]:
  """The checkpoint's class names; for converted weights without them, the
  dataset's where the count fits, else the indices."""
  names = predictor.class_names
  if not names and data is not None:
    label = data.builder.info.features['label']
    names = label.names if label.num_classes == classes else None
  return list(names) if names else [str(c) for c in range(classes)]


def _check_source(files: str | None, labels: str | None, split: str | None,
                  dataset: str | None, data_dir: str | None) -> None:
  if files is None:
    if labels is not None:
      raise ValueError(f'--labels={labels}: labels a .npy batch; pass it '
                       'as --files=IMAGES.npy too.')
    return
  for flag, value in (('split', split), ('dataset', dataset),
                      ('data_dir', data_dir)):
    if value is not None:
      raise ValueError(f'--{flag}={value}: chooses a dataset split, but '
                       f'--files={files} are evaluated instead; pass one '
                       'of them.')


def run(checkpoint_path: str, output: str, *, split: str | None = None,
        use_ema: bool = False, dataset: str | None = None,
        data_dir: str | None = None, batch_size: int | None = None,
        files: str | None = None, labels: str | None = None,
        quantize: str | None = None, prune: float = 0.0,
        overwrite: bool = False) -> dict[str, Any]:
  """Evaluates the checkpoint (compressed with `quantize` / `prune`) on
  `split`, or on `files` (`labelled_files.read`: a folder of class folders,
  or a .npy batch with its `labels` .npy) without TensorFlow, prints
  report.md and writes the report to `output`.

  Raises ValueError or OSError (one line naming the flag) on a bad option,
  checkpoint, dataset, file or output, before anything is written.
  """
  compress.check_options(quantize, prune)
  _check_source(files, labels, split, dataset, data_dir)
  check_output(output, overwrite)
  path = checkpoint.absolute(checkpoint_path)
  try:
    predictor = predict.load(path, use_ema)
    meta = checkpoint.load_meta(path)
  except (ValueError, OSError) as e:
    raise type(e)(f'--checkpoint={checkpoint_path}: {e}') from None
  trained = run_config(path, meta)
  config = data_config(path, meta, predictor, trained, dataset, data_dir,
                       batch_size, files=files is not None)
  mesh = sharding.create_mesh()
  if config.eval_batch_size % mesh.size:
    raise ValueError(f'--batch_size={config.eval_batch_size}: must divide '
                     f'among the {mesh.size} devices.')
  task = ConfusionClassification(config)
  if files is None:
    data = eval_data(config, task, predictor, split,
                     converted=trained is None)
    names = _class_names(predictor, task.num_classes, data)
    eval_batches = data.eval_batches
    source = {'dataset': config.dataset, 'split': data.eval_split}
  else:
    names = _class_names(predictor, task.num_classes)
    eval_batches = functools.partial(
        labelled_files.eval_batches,
        labelled_files.read(files, labels, predictor, names),
        config.eval_batch_size, jax.process_index(), jax.process_count())
    source = {'dataset': None, 'split': None, 'files': files,
              'labels': labels}
  variables_sharding = sharding.replicated(mesh)
  eval_fn = step_lib.make_eval_step(task, predictor.model, mesh,
                                    variables_sharding)
  host_variables = jax.device_get(predictor.variables)
  result = evaluate(task, eval_fn,
                    jax.device_put(host_variables, variables_sharding),
                    eval_batches, mesh)
  study = None
  if quantize or prune:
    compressed = compress.compress(host_variables, quantize, prune)
    baseline = result
    result = evaluate(task, eval_fn, jax.device_put(compressed.variables,
                                                    variables_sharding),
                      eval_batches, mesh)
    study = _compression_study(baseline, result, host_variables, compressed,
                               quantize, prune)
  report = {
      'checkpoint': checkpoint_path, 'model': meta['model'],
      'step': meta.get('step'), 'use_ema': use_ema, **source,
      'examples': int(result.confusion.sum()),
      **result.metrics,
      **class_scores(result.confusion, names),
      'confusion_matrix': result.confusion.tolist(),
  }
  if study:
    report['compression'] = study
  if jax.process_index() == 0:
    print(format_markdown(report))
    write_report(output, report)
  return report


def _compression_study(baseline: Evaluation, result: Evaluation,
                       variables: dict, compressed: compress.Compressed,
                       quantize: str | None, prune: float) -> dict[str, Any]:
  method = ' + '.join(([f'prune {prune:g}'] if prune else []) +
                      ([quantize] if quantize else []))
  before = {'accuracy': baseline.metrics['accuracy'],
            'top5': baseline.metrics['top5'],
            'size_bytes': compress.size_bytes(variables)}
  after = {'accuracy': result.metrics['accuracy'],
           'top5': result.metrics['top5'],
           'size_bytes': compressed.size_bytes,
           'zeroed_kernel_weights': compressed.zeroed_kernel_weights,
           'kernel_weights': compressed.kernel_weights}
  return {
      'method': method, 'quantize': quantize, 'prune': prune,
      'float': before, 'compressed': after,
      'change': {'accuracy': after['accuracy'] - before['accuracy'],
                 'top5': after['top5'] - before['top5'],
                 'size_ratio': after['size_bytes'] / before['size_bytes']}}
