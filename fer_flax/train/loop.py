"""The training loop: set-up, then each call of the compiled step, then logging, evaluation and
checkpoints. The run's shape is its plan (`plan`, sized by `budget`), the run itself comes from
`build`, the steps are in `step_fns`, the inputs in `data.feeds`, the workdir's files in
`workdirs`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from fer_flax import models
from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Parallel
from fer_flax.data import feeds
from fer_flax.train import budget, build, evaluation, preemption, step_fns, workdirs, writers
from fer_flax.train.clock import Clock


def _format_seconds(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'


def _crossed(previous: int, step: int, every: int) -> bool:
  """Whether a call that went from `previous` to `step` passed a multiple of `every`."""
  return bool(every) and step // every > previous // every


def _best_summary(checkpoints: workdirs.Checkpoints, split: str) -> str:
  best = checkpoints.best()
  if best is None:
    return 'no evaluated checkpoint'
  return f'best {split} accuracy {best[1]["accuracy"]:.4f} at step {best[0]}'


class Diverged(UserError):
  """The loss or the weights stopped being finite; the checkpoints before that are kept."""

  def __init__(self, what: str, first: int, last: int, saved: int,
               config: ml_collections.ConfigDict, learning_rate: float):
    kept = f'its checkpoints up to step {saved} are kept' if saved else 'no checkpoint was saved'
    fixes = ['a lower --config.optimizer.learning_rate']
    if not config.optimizer.grad_clip_norm:
      fixes.append('--config.optimizer.grad_clip_norm=1.0')
    if config.model.dtype != 'float32':
      fixes.append('--config.model.dtype=float32')
    super().__init__(
        f'training diverged: {what} became NaN or infinite between steps {first} and {last}, at '
        f'learning rate {learning_rate:.3g}; {kept}. Likely cause: too high a learning rate; '
        f'train in a new --workdir with {" or ".join(fixes)}')


class _Window:
  """The train metrics since the last log, and the training time they took (evaluation and
  checkpointing are left out of images/s)."""

  def __init__(self, step: int):
    self._restart(step)

  def _restart(self, step: int) -> None:
    self.start, self._metrics, self._seconds, self._tick = step, [], 0.0, time.perf_counter()

  def add(self, metrics: step_fns.Metrics) -> None:
    self._metrics.append(metrics)

  def pause(self) -> None:
    self._seconds += time.perf_counter() - self._tick

  def resume(self) -> None:
    self._tick = time.perf_counter()

  def close(self, step: int, batch_size: int) -> tuple[int, dict[str, float]]:
    """(first step, {mean loss and accuracy, images/s}) of the window; waits for its steps, then
    starts anew."""
    first, summary = self.start, step_fns.summarize(self._metrics)
    self.pause()
    summary['images_per_sec'] = (step - self.start) * batch_size / self._seconds
    self._restart(step)
    return first, summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       started: float | None = None) -> step_fns.TrainState:
  """Trains per `config` in `workdir`, resuming from its latest checkpoint if there is one.

  `started` (a `time.perf_counter()` value) is when the command started, for the times that
  evaluation records carry; by default, now.
  """
  # Set-up: the workdir, the mesh, the inputs, the run's plan, then the run itself.
  clock = Clock(started)
  workdir = workdirs.workdir_path(workdir)
  checkpoints = workdirs.Checkpoints(workdir, config)
  start_step = checkpoints.latest_step()
  parallel = Parallel(cpu_compiler_options=config.cpu_compiler_options.to_dict())
  parallel.check_batch_size(config.batch_size, 'batch_size')
  feed, eval_batches = feeds.train_and_eval(config, parallel)
  plan, refit = budget.fit(config, workdir, bool(start_step), parallel, feed, eval_batches,
                           clock.elapsed())
  workdirs.check_or_save_config(config, workdir, resuming=bool(start_step))
  plan.save(workdir)
  split = config.data.eval_split
  run = build.build(config, plan, parallel)
  state, schedule = run.state, run.schedule
  if start_step:
    state = checkpoints.restore(state, start_step)
  else:
    state = build.fit_to_data(config, state, feed, parallel)
  if start_step >= plan.total_steps:
    logging.info('Run in %s already finished at step %d (%s); nothing to do.', workdir, start_step,
                 _best_summary(checkpoints, split))
    return state
  logging.info('%s: %s parameters; %d %s device(s), %d process(es); %s input; %d steps/epoch, '
               '%d epochs; %s', config.model.name, f'{models.count_parameters(state.params):,}',
               parallel.num_devices, jax.devices()[0].platform, jax.process_count(),
               config.data.pipeline, plan.steps_per_epoch, plan.num_epochs,
               f'resuming at step {start_step}' if start_step else 'starting')
  writer = writers.create_writer(workdir, start_step, jax.process_index() == 0)

  step, saved, preempted, window = start_step, start_step, False, _Window(start_step)
  calls, call = feed.batches(start_step, plan.total_steps), -1
  clock.first_step()
  with preemption.Watch() as watch:
    while (batches := next(calls, None)) is not None:
      # Each call: a stack of batches through the compiled steps.
      call += 1
      state, metrics = run.train_step(state, batches, run.rng, plan.image_size(step),
                                      plan.augmented(step))
      previous, step = step, step + batches['label'].shape[0]
      window.add(metrics)

      # When to log.
      if _crossed(previous, step, config.log_every_steps) or step == plan.total_steps:
        first, train = window.close(step, config.batch_size)
        learning_rate = float(schedule(step - 1))
        if not math.isfinite(train['loss']):
          _stop(checkpoints, writer, Diverged('the training loss', first, step, saved, config,
                                              learning_rate))
        writer.write_scalars(step, {'train/loss': train['loss'],
                                    'train/accuracy': train['accuracy'],
                                    'train/learning_rate': learning_rate,
                                    'train/images_per_sec': train['images_per_sec']})
        logging.info('step %d/%d (epoch %.2f/%d): %.0f images/s, ETA %s', step, plan.total_steps,
                     step / plan.steps_per_epoch, plan.num_epochs, train['images_per_sec'],
                     _format_seconds((plan.total_steps - step) * config.batch_size
                                     / train['images_per_sec']))

      # When to evaluate and save.
      end_of_epoch = step % plan.steps_per_epoch == 0
      preempted = watch.reached(call) and step < plan.total_steps
      if not (end_of_epoch or preempted or _crossed(previous, step, config.checkpoint_every_steps)):
        continue
      finite = bool(step_fns.all_finite(state.params))  # Waits for the steps in flight.
      window.pause()
      if not finite:
        _stop(checkpoints, writer, Diverged('the weights', saved, step, saved, config,
                                            float(schedule(step - 1))))
      evaluated = None
      if end_of_epoch:
        evaluated = _evaluate(run, state, eval_batches, clock, writer, step, split)
      checkpoints.save(step, state, evaluated)
      writer.flush()
      saved = step
      if preempted:
        break
      # The time budget's second sizing: a new plan, schedule and optimizer from here on.
      if end_of_epoch and (resized := refit(config, plan, step // plan.steps_per_epoch,
                                            clock.elapsed())):
        plan = resized
        plan.save(workdir)
        schedule, state = build.replanned(config, plan, state)
        calls = feed.batches(step, plan.total_steps)
      window.resume()

  checkpoints.wait()
  writer.close()
  if preempted:
    raise preemption.Preempted(step)
  logging.info('Finished %d steps (%s).', plan.total_steps, _best_summary(checkpoints, split))
  return state


def _evaluate(run: build.Run, state: step_fns.TrainState, eval_batches: Any, clock: Clock,
              writer: writers.MultiWriter, step: int, split: str) -> dict[str, float]:
  """Scores the state on the eval split and records it with the run's times."""
  result = evaluation.score(*evaluation.predictions(run.eval_step, state.variables(),
                                                     eval_batches))
  evaluated = {'accuracy': result['accuracy'], 'loss': result['loss']}
  times = clock.stamp()
  writer.write_scalars(step, {f'{split}/{k}': v for k, v in {**evaluated, **times}.items()})
  logging.info('%s accuracy %.4f at step %d, %.1f s since the start: %.1f s training, '
               '%.1f s compiling', split, result['accuracy'], step,
               times['elapsed_seconds'], times['train_seconds'], times['compile_seconds'])
  return evaluated


def _stop(checkpoints: workdirs.Checkpoints, writer: writers.MultiWriter, error: UserError):
  """Ends the run on `error`, after the saves in flight and the kept records are on disk."""
  checkpoints.wait()
  writer.close()
  raise error
