"""train_and_evaluate: the whole run behind train.py."""

import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcnn import checkpoint
from jaxcnn import config_check
from jaxcnn import metrics as metrics_lib
from jaxcnn import optim
from jaxcnn import sharding
from jaxcnn import state as state_lib
from jaxcnn import step as step_lib
from jaxcnn import summary as summary_lib
from jaxcnn import tasks
from jaxcnn import workdir as workdir_lib

# The signals that stop a run after it saves a checkpoint at the current step.
_STOP_SIGNALS = {signal.SIGTERM: 'Preempted', signal.SIGINT: 'Interrupted'}


class Preempted(Exception):
  """SIGTERM or SIGINT (or another host's preemption) stopped the run after it
  saved a checkpoint at `step`; rerunning the same command resumes there."""

  def __init__(self, step: int, signum: int = signal.SIGTERM):
    super().__init__(f'{_STOP_SIGNALS[signum]} at step {step}: checkpoint '
                     'saved, exiting')
    self.step = step
    self.signum = signum


def _progress(total: int, initial: int, enabled: bool):
  if not (enabled and jax.process_index() == 0 and sys.stderr.isatty()):
    return None
  from tqdm import auto as tqdm
  return tqdm.tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True)


def _fetch(records: list[dict[str, Any]]) -> list[dict[str, float]]:
  return [{k: float(v) for k, v in r.items()} for r in jax.device_get(records)]


def _check_finite(records: list[dict[str, float]], last_step: int) -> None:
  """Raises naming the first non-finite step; `records` end at `last_step`."""
  for i, record in enumerate(records):
    if not record['finite']:
      step = last_step - len(records) + 1 + i
      raise FloatingPointError(
          f'Non-finite loss or gradient at step {step}; the checkpoints hold '
          'only earlier, finite steps. Lower --config.learning_rate (or set '
          '--config.grad_clip_norm) and start again in a new --workdir, or '
          'rerun the same command with --config.on_nonfinite=skip to resume '
          'from the last checkpoint, skipping such steps.')


def _summarise(records: list[dict[str, float]],
               count_skipped: bool) -> dict[str, float]:
  """Means over the finite steps; with `count_skipped`, the number of others."""
  finite = [r for r in records if r['finite']]
  summary = {k: float(np.mean([r[k] for r in finite or records]))
             for k in records[0] if k != 'finite'}
  if count_skipped:
    summary['skipped_steps'] = float(len(records) - len(finite))
  return summary


def _stop_on_signals() -> tuple[dict[str, int], dict[int, Any]]:
  """{'signum': N} once SIGTERM or SIGINT arrived, and the handlers replaced.

  No handler is installed off the main thread, where Python cannot handle
  signals, and in a multi-process run, where JAX's preemption service owns
  SIGTERM and `reached_preemption` stops every process at the same step (a
  local stop would leave the others waiting in collectives). A second Ctrl-C
  interrupts at once.
  """
  received: dict[str, int] = {}
  if (jax.process_count() > 1 or
      threading.current_thread() is not threading.main_thread()):
    return received, {}

  def handle(signum, _):
    received.setdefault('signum', signum)
    if signum == signal.SIGINT:
      logging.warning('Interrupted: saving a checkpoint after this step '
                      '(Ctrl-C again to stop at once).')
      signal.signal(signal.SIGINT, signal.default_int_handler)
  return received, {signum: signal.signal(signum, handle)
                    for signum in _STOP_SIGNALS}


def evaluate(task: tasks.Task, eval_fn, variables: dict,
             data: tasks.InputPipeline, batch_sharding) -> dict[str, float]:
  """The task's evaluation of `variables` over every eval example once."""
  evaluator = task.evaluator()
  for batch in data.eval_batches():
    evaluator.add(eval_fn(variables,
                          sharding.global_batch(batch, batch_sharding)))
  return evaluator.result()


def _initial_variables(config, model, mesh, init_rng):
  image_shape = (config.image_size, config.image_size, model.in_channels)
  init = functools.partial(state_lib.initial_variables, model,
                           image_shape=image_shape)
  variables = jax.jit(init, out_shardings=sharding.replicated(mesh))(init_rng)
  if config.init_from:
    pretrained, meta = checkpoint.load_variables(config.init_from)
    logging.info('Initialising from %s (%s).', config.init_from,
                 meta.get('model', 'unknown model'))
    variables = jax.device_put(
        checkpoint.merge_pretrained(jax.device_get(variables), pretrained),
        sharding.replicated(mesh))
  return variables


def _write_summary(model: Any, image_shape: tuple[int, int, int], name: str,
                   workdir: str) -> None:
  """WORKDIR/model_summary.txt: the layers, parameters and MACs of the
  run's model. A model the summary cannot describe is logged, not fatal."""
  path = os.path.join(workdir, summary_lib.SUMMARY_FILE)
  try:
    summary_lib.write_summary(model, image_shape, path, name)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('No %s (%s: %s).', path, type(e).__name__, e)


def model_defaults(config: ml_collections.ConfigDict,
                   workdir: str | None = None) -> dict[str, Any]:
  """The model fields the run's weights need, which `model_kwargs` override:
  those its own checkpoints in `workdir` recorded (so that a run resumes
  after the weights it started from are gone), else those of `init_from`
  (e.g. torchvision EfficientNet's padding). Runs from before
  `config.lowering` recorded `depthwise`/`pointwise` here: models.from_config
  takes those as lowering choices."""
  if workdir:
    recorded = checkpoint.recorded_model_kwargs(
        os.path.join(workdir, 'checkpoints'))
    if recorded is not None:
      return recorded
  return checkpoint.model_kwargs_of(config.init_from)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming its latest checkpoint if any.

  Returns the final evaluation metrics (also the last metrics.jsonl record).
  Nothing is written to `workdir` before the first step can run; a finished
  run is left as it is.
  """
  config_check.check(config, jax.device_count(), jax.process_count(),
                     workdir)
  current = json.loads(config.to_json_best_effort())
  is_main = jax.process_index() == 0  # It alone takes the workdir's lock.
  workdir_lib.check(workdir, current, lock=is_main)
  with workdir_lib.claim(workdir, enabled=is_main) as run:
    return _train(config, workdir, run, current)


def _completed_results(workdir: str, total_steps: int) -> dict | None:
  """The final evaluation of a run that ended, if metrics.jsonl has it."""
  records = metrics_lib.read_metrics(workdir)
  if records and records[-1]['step'] == total_steps and any(
      k.startswith('eval/') for k in records[-1]):
    return {k: v for k, v in records[-1].items() if k != 'step'}
  return None


def _train(config: ml_collections.ConfigDict, workdir: str,
           run: workdir_lib.Claim, current: dict[str, Any]) -> dict[str, float]:
  task = tasks.create(config)
  defaults = model_defaults(config, workdir)
  model = task.model(defaults)  # With the run's lowering for this platform.
  lowering = model.lowering.as_dict() if hasattr(model, 'lowering') else None
  data = task.input_pipeline(model, jax.process_index(), jax.process_count())
  mesh = sharding.create_mesh()
  steps_per_epoch = data.steps_per_epoch
  total_steps = optim.to_steps(config, 'num', steps_per_epoch)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch)
  tx = optim.create_optimizer(config, schedule)
  init_rng = state_lib.init_key(config.seed)

  def make_state(variables):
    return state_lib.create(model, tx, variables, config.ema_decay > 0)

  with checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                               config.keep_checkpoints) as checkpointer:
    image_shape = (config.image_size, config.image_size, model.in_channels)
    abstract_state = jax.eval_shape(lambda: make_state(
        state_lib.initial_variables(model, init_rng, image_shape)))
    state_sharding = sharding.state_shardings(mesh, abstract_state)
    restored = checkpointer.restore_latest(jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state, state_sharding))
    if restored is None:
      variables = _initial_variables(config, model, mesh, init_rng)
      state = jax.jit(make_state, out_shardings=state_sharding)(variables)
      start_step, restored_meta = 0, {}
    else:
      start_step, state, restored_meta = restored
      if start_step == total_steps:
        final = _completed_results(workdir, total_steps)
        if final is not None:
          logging.info('The run in %s is complete (step %d of %d): its final '
                       'evaluation is the last line of %s. Nothing to do.',
                       workdir, start_step, total_steps,
                       os.path.join(workdir, metrics_lib.METRICS_FILE))
          return final
      logging.info('Resuming from the checkpoint at step %d.', start_step)
    batch_sharding = sharding.batch_sharding(mesh)
    train_step = step_lib.make_train_step(config, task, model, schedule, mesh,
                                          state_sharding, total_steps)
    eval_fn = step_lib.make_eval_step(task, model, mesh,
                                      state_sharding.variables())
    batches = data.train_batches(start_step)
    first_batch = None
    if start_step < total_steps:
      first_batch = sharding.global_batch(next(batches), batch_sharding)
      # Compiled before anything is written: the first step can run.
      train_step = train_step.lower(state, first_batch).compile()

    run.started()
    is_main = jax.process_index() == 0
    if lowering is not None:
      logging.info('Layers lowered for %s: %s.', jax.default_backend(),
                   model.lowering)
      current = {**current, 'lowering': lowering}
    if is_main:
      workdir_lib.write_config(workdir, current)
      if first_batch is not None:
        _write_summary(model, image_shape, config.model, workdir)
    writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
    writer.truncate_after(start_step)
    eval_every = max(1, optim.to_steps(config, 'eval_every', steps_per_epoch))
    # Self-describing: predict, evaluation, fine-tuning and resuming read
    # the model and its data from here alone.
    meta = {'task': config.task, 'model': config.model,
            'model_kwargs': {**defaults, **config.model_kwargs.to_dict()},
            'half_precision': config.half_precision,
            **task.metadata(model, data)}
    if lowering is not None:
      meta['lowering'] = lowering

    def run_eval(step: int) -> dict[str, float]:
      results = {f'eval/{k}': v for k, v in evaluate(
          task, eval_fn, state.variables(), data, batch_sharding).items()}
      if state.ema is not None:
        results.update({f'eval_ema/{k}': v for k, v in evaluate(
            task, eval_fn, state.variables(use_ema=True), data,
            batch_sharding).items()})
      writer.write(step, results)
      metrics_lib.log(step, total_steps, results)
      return results

    logging.info('%s on %s: %d steps (%d per epoch), global batch %d, %d '
                 'devices, %d processes.', config.model, config.dataset,
                 total_steps, steps_per_epoch, config.batch_size, mesh.size,
                 jax.process_count())
    progress = _progress(total_steps, start_step, config.progress_bar)
    # Per-step train metrics not yet logged; checkpoints carry them, so that a
    # resumed run logs the same averages as an uninterrupted one.
    pending: list[dict[str, Any]] = (
        restored_meta.get('pending_train_metrics', []) if start_step else [])
    last_log = (time.perf_counter(), start_step)
    results: dict[str, float] = {}
    stop, previous_handlers = _stop_on_signals()
    try:
      for step in range(start_step + 1, total_steps + 1):
        batch = (first_batch if step == start_step + 1 else
                 sharding.global_batch(next(batches), batch_sharding))
        state, step_metrics = train_step(state, batch)
        pending.append(step_metrics)
        if progress is not None:
          progress.update(1)
        # On every host at once when any of them got the signal (Orbax's sync
        # point, with the jax.distributed preemption service).
        preempted = step < total_steps and (
            bool(stop) or checkpointer.reached_preemption(step))
        is_log = step % config.log_every_steps == 0 or step == total_steps
        is_eval = step % eval_every == 0 or step == total_steps
        is_save = (step % config.checkpoint_every_steps == 0 or
                   step == total_steps or preempted)
        if is_log or is_eval or is_save:
          # The host waits here anyway; never evaluate or save a diverged run.
          pending = _fetch(pending)
          if config.on_nonfinite == 'halt':
            _check_finite(pending, step)
        if is_log:
          train_metrics = {f'train/{k}': v for k, v in _summarise(
              pending, config.on_nonfinite == 'skip').items()}
          pending = []
          now = time.perf_counter()
          speed = {'train/images_per_sec': (step - last_log[1]) *
                   config.batch_size / (now - last_log[0])}
          last_log = (now, step)
          writer.write(step, train_metrics, wall_clock=speed)
          metrics_lib.log(step, total_steps, {**train_metrics, **speed})
        if is_eval:
          results = run_eval(step)
        if is_save:
          # A copy: the async save serialises it while the loop appends.
          checkpointer.save(step, state, {
              **meta, 'step': step, 'pending_train_metrics': list(pending)})
        if preempted:
          checkpointer.wait()
          stopped = Preempted(step, stop.get('signum', signal.SIGTERM))
          logging.info('%s', stopped)
          raise stopped
      if start_step == total_steps:
        results = run_eval(total_steps)
    finally:
      for signum, handler in previous_handlers.items():
        signal.signal(signum, handler)
      if progress is not None:
        progress.close()
      writer.close()
    return results
