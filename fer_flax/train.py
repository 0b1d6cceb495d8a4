"""The training loop: set-up, then each call of the compiled step, then logging, evaluation and
checkpoints. The steps are in `steps`, the inputs in `inputs`, the workdir's files in `workdirs`.
"""

from __future__ import annotations

import math
import time

import jax
import ml_collections
import optax
from absl import logging
from etils import epath

from fer_flax import (budget, evaluate, inputs, models, optim, preemption, progressive, steps,
                      timing, workdirs, writers)
from fer_flax.errors import UserError
from fer_flax.sharding import Parallel


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

  def add(self, metrics: steps.Metrics) -> None:
    self._metrics.append(metrics)

  def pause(self) -> None:
    self._seconds += time.perf_counter() - self._tick

  def resume(self) -> None:
    self._tick = time.perf_counter()

  def close(self, step: int, batch_size: int) -> dict[str, float]:
    """Mean loss and accuracy, and images/s; waits for the window's steps, then starts anew."""
    summary = steps.summarize(self._metrics)
    self.pause()
    summary['images_per_sec'] = (step - self.start) * batch_size / self._seconds
    self._restart(step)
    return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       started: float | None = None) -> steps.TrainState:
  """Trains per `config` in `workdir`, resuming from its latest checkpoint if there is one.

  `started` (a `time.perf_counter()` value) is when the command started, for the times that
  evaluation records carry; by default, now.
  """
  clock = timing.Clock(started)
  workdir = workdirs.workdir_path(workdir)
  checkpoints = workdirs.Checkpoints(workdir, config)
  start_step = checkpoints.latest_step()
  parallel = Parallel(cpu_compiler_options=config.cpu_compiler_options.to_dict())
  parallel.check_batch_size(config.batch_size, 'batch_size')
  feed, eval_batches = inputs.feeds(config, parallel)
  config, refit = budget.fit(config, workdir, bool(start_step), parallel, feed, eval_batches,
                             clock.elapsed())
  workdirs.check_or_save_config(config, workdir, resuming=bool(start_step))
  steps_per_epoch = feed.steps_per_epoch
  total_steps = steps_per_epoch * config.num_epochs
  image_sizes = progressive.epoch_sizes(config)
  split = config.data.eval_split

  model = models.create_model(config.model)
  schedule = optim.create_learning_rate_schedule(config, steps_per_epoch, total_steps)
  state, rng = steps.initial_state(config, model, schedule, parallel)
  if start_step:
    state = checkpoints.restore(state, start_step)
  if start_step >= total_steps:
    logging.info('Run in %s already finished at step %d (%s); nothing to do.', workdir, start_step,
                 _best_summary(checkpoints, split))
    return state
  train_step = steps.compile_train_steps(config, parallel)
  eval_step = steps.compile_eval_step(model.apply, parallel)
  logging.info('%s: %s parameters; %d %s device(s), %d process(es); %s input; %d steps/epoch, '
               '%d epochs; %s', config.model.name,
               f'{sum(x.size for x in jax.tree.leaves(state.params)):,}', parallel.num_devices,
               jax.devices()[0].platform, jax.process_count(), config.data.pipeline,
               steps_per_epoch, config.num_epochs,
               f'resuming at step {start_step}' if start_step else 'starting')
  writer = writers.create_writer(workdir, start_step, jax.process_index() == 0)

  step, saved, preempted, window = start_step, start_step, False, _Window(start_step)
  calls, call = feed.batches(start_step, total_steps), -1
  clock.first_step()
  with preemption.Watch() as watch:
    while (batches := next(calls, None)) is not None:
      call += 1
      state, metrics = train_step(state, batches, rng, image_sizes[step // steps_per_epoch])
      previous, step = step, step + batches['label'].shape[0]
      window.add(metrics)

      if _crossed(previous, step, config.log_every_steps) or step == total_steps:
        first, train = window.start, window.close(step, config.batch_size)
        learning_rate = float(schedule(step - 1))
        if not math.isfinite(train['loss']):
          _stop(checkpoints, writer, Diverged('the training loss', first, step, saved, config,
                                              learning_rate))
        writer.write_scalars(step, {'train/loss': train['loss'],
                                    'train/accuracy': train['accuracy'],
                                    'train/learning_rate': learning_rate,
                                    'train/images_per_sec': train['images_per_sec']})
        logging.info('step %d/%d (epoch %.2f/%d): %.0f images/s, ETA %s', step, total_steps,
                     step / steps_per_epoch, config.num_epochs, train['images_per_sec'],
                     _format_seconds((total_steps - step) * config.batch_size
                                     / train['images_per_sec']))

      end_of_epoch = step % steps_per_epoch == 0
      preempted = watch.reached(call) and step < total_steps
      if not (end_of_epoch or preempted or _crossed(previous, step, config.checkpoint_every_steps)):
        continue
      finite = bool(steps.all_finite(state.params))  # Waits for the steps in flight.
      window.pause()
      if not finite:
        _stop(checkpoints, writer, Diverged('the weights', saved, step, saved, config,
                                            float(schedule(step - 1))))
      evaluated = None
      if end_of_epoch:
        result = evaluate.score(*evaluate.predictions(eval_step, state.variables(), eval_batches))
        evaluated = {'accuracy': result['accuracy'], 'loss': result['loss']}
        times = clock.stamp()
        writer.write_scalars(step, {f'{split}/{k}': v for k, v in {**evaluated, **times}.items()})
        logging.info('%s accuracy %.4f at step %d, %.1f s since the start: %.1f s training, '
                     '%.1f s compiling', split, result['accuracy'], step,
                     times['elapsed_seconds'], times['train_seconds'], times['compile_seconds'])
      checkpoints.save(step, state, evaluated)
      writer.flush()
      saved = step
      if preempted:
        break
      if end_of_epoch and (resized := refit(config, step // steps_per_epoch, clock.elapsed())):
        config = resized
        schedule, state, total_steps = _resized(config, state, workdir, steps_per_epoch)
        image_sizes = progressive.epoch_sizes(config)
        calls = feed.batches(step, total_steps)
      window.resume()

  checkpoints.wait()
  writer.close()
  if preempted:
    raise preemption.Preempted(step)
  logging.info('Finished %d steps (%s).', total_steps, _best_summary(checkpoints, split))
  return state


def _resized(config: ml_collections.ConfigDict, state: steps.TrainState, workdir: epath.Path,
             steps_per_epoch: int) -> tuple[optax.Schedule, steps.TrainState, int]:
  """The schedule, state and total steps of a run re-sized to `config.num_epochs` (its next call
  compiles anew), which its config.json then records for a resume."""
  workdirs.check_or_save_config(config, workdir, resuming=False)
  total_steps = steps_per_epoch * config.num_epochs
  schedule = optim.create_learning_rate_schedule(config, steps_per_epoch, total_steps)
  return schedule, state.replace(tx=optim.create_optimizer(config, schedule)), total_steps


def _stop(checkpoints: workdirs.Checkpoints, writer: writers.MultiWriter, error: UserError):
  """Ends the run on `error`, after the saves in flight and the kept records are on disk."""
  checkpoints.wait()
  writer.close()
  raise error
