"""Runs sized by a time budget: as many epochs as fit, from the measured speed of the run's steps.

With `config.time_budget_minutes`, a new run times its own compiled train step (after a few warm
calls) and one evaluation of its split on a throwaway run, then plans the epochs that fit in the
budget (counted from the command's start), the warm-up scaled with them so the schedule keeps its
shape on slower and faster machines. Machines slow under sustained load, so at the end of the
warm-up the run sizes itself again (`Refit`) from the pace of its own epochs since the first: the
warm-up keeps its steps, and the anneal takes the epochs that fit. With progressive resizing each
image size is timed. The config stays as given; the plan is what changes (`plan.RunPlan`).
Measurements behind these choices: docs/time_budget.md.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from fer_flax.core.mesh import Parallel
from fer_flax.data import fer2013, progressive
from fer_flax.train import build, evaluation, step_fns, workdirs
from fer_flax.train import plan as plan_lib
from fer_flax.train.plan import RunPlan

# The last evaluation and wait, and a pace that drifts after it is measured, as a share of the
# budget.
RESERVE = 0.05
# The calls just after compiling run slower than the rest; the calls after them are timed for at
# least this long, as the CPU's speed wanders from call to call by a few per cent.
_WARM_CALLS = 3
_TIMED_SECONDS = 20.0


class Pace:
  """Seconds an epoch (training and its evaluation) takes at each image size, and seconds each
  size's train step takes to compile."""

  def __init__(self, epoch_seconds: dict[int, float], compile_seconds: dict[int, float]):
    self.epoch_seconds, self.compile_seconds = epoch_seconds, compile_seconds

  def seconds(self, sizes: list[int]) -> float:
    """Epochs at these sizes, one after another."""
    return sum(self.epoch_seconds[size] for size in sizes)

  def scaled(self, factor: float) -> Pace:
    return Pace({k: v * factor for k, v in self.epoch_seconds.items()}, self.compile_seconds)


def epochs_that_fit(budget_seconds: float, elapsed_seconds: float, pace: Pace,
                    config: ml_collections.ConfigDict, done: int = 0) -> int:
  """The most epochs (at least one more than the `done` ones) whose rest, compiled anew, fits in
  what is left of the budget."""
  left = budget_seconds * (1 - RESERVE) - elapsed_seconds

  def fits(epochs: int) -> bool:
    sizes = progressive.epoch_sizes(config, epochs)[done:]  # each size compiles once
    return pace.seconds(sizes) + sum(pace.compile_seconds[size] for size in set(sizes)) <= left

  low, high = done + 1, done + 2 + math.ceil(max(left, 0) / min(pace.epoch_seconds.values()))
  while high - low > 1:  # fits(low) or low == done + 1; not fits(high); time grows with epochs
    middle = (low + high) // 2
    low, high = (middle, high) if fits(middle) else (low, middle)
  return low


def _agreed(epochs: int) -> int:
  """Process 0's count, which every process trains for (their clocks differ a little)."""
  return int(multihost_utils.broadcast_one_to_all(np.int32(epochs)))


class Refit:
  """The run's second sizing, at the end of its warm-up, from the pace of its epochs since the
  first (which compiled and started slower than the rest).

  Called at each epoch's end; returns the plan re-sized at the warm-up's last whole epoch, or
  None. The warm-up keeps its steps, so the learning rates so far stay as they were (a warm-up
  shorter than two epochs is re-sized at the second, a little into the anneal, which then changes).
  """

  def __init__(self, budget_seconds: float = 0.0, pace: Pace | None = None, at_epoch: int = 0):
    self._budget_seconds = budget_seconds
    self._pace = pace
    self._at_epoch = at_epoch
    self._first_epoch_end: float | None = None

  def __call__(self, config: ml_collections.ConfigDict, plan: RunPlan, epoch: int,
               elapsed_seconds: float) -> RunPlan | None:
    if epoch == 1:
      self._first_epoch_end = elapsed_seconds
    if epoch != self._at_epoch or self._first_epoch_end is None:
      return None
    took = elapsed_seconds - self._first_epoch_end
    factor = took / self._pace.seconds(list(plan.image_sizes[1:epoch]))
    epochs = _agreed(epochs_that_fit(self._budget_seconds, elapsed_seconds,
                                     self._pace.scaled(factor), config, done=epoch))
    logging.info('time budget %g min: epochs 2-%d took %.1f s each (%.2f times the measured '
                 'pace), %.1f s gone; %d epochs fit (sized %d at the start)',
                 config.time_budget_minutes, epoch, took / (epoch - 1), factor, elapsed_seconds,
                 epochs, plan.num_epochs)
    return None if epochs == plan.num_epochs else plan.resized(config, epochs)


def _time_steps(train_step: Any, state: step_fns.TrainState, calls: Any, rng: Any, image_size: int,
                steps_per_call: int) -> tuple[step_fns.TrainState, float, float]:
  """(state, seconds a step takes, seconds the first call compiled) at `image_size`."""
  tic = time.perf_counter()
  state, metrics = train_step(state, next(calls), rng, image_size)
  jax.block_until_ready(metrics)
  first_call = time.perf_counter() - tic
  seconds, step_counts = [], []
  for batches in calls:
    tic = time.perf_counter()
    state, metrics = train_step(state, batches, rng, image_size)
    jax.block_until_ready(metrics)
    seconds.append(time.perf_counter() - tic)
    step_counts.append(batches['label'].shape[0])
    if len(seconds) > _WARM_CALLS and sum(seconds[_WARM_CALLS:]) >= _TIMED_SECONDS:
      break
  if len(seconds) > _WARM_CALLS:  # past the warm calls; a short run times all it has
    seconds, step_counts = seconds[_WARM_CALLS:], step_counts[_WARM_CALLS:]
  if not seconds:  # A run of one call: its time, compilation included, is all there is to go by.
    return state, first_call / steps_per_call, 0.0
  return state, sum(seconds) / sum(step_counts), first_call - np.mean(seconds)


def _measure(config: ml_collections.ConfigDict, parallel: Parallel, feed: Any,
             eval_batches: Any) -> Pace:
  """Times the run's train step at each of its image sizes, and one evaluation, on a throwaway
  run."""
  plan = RunPlan.create(config, feed.steps_per_epoch)
  run = build.build(config, plan, parallel)
  state, step_seconds, compile_seconds = run.state, {}, {}
  for size in sorted({fer2013.IMAGE_SIZE, *config.progressive.sizes}, reverse=True):
    state, step_seconds[size], compile_seconds[size] = _time_steps(
        run.train_step, state, iter(feed.batches(0, plan.total_steps)), run.rng, size,
        config.steps_per_call)
  evaluation.predictions(run.eval_step, state.variables(), eval_batches)  # compiles
  tic = time.perf_counter()
  evaluation.predictions(run.eval_step, state.variables(), eval_batches)
  eval_seconds = time.perf_counter() - tic
  return Pace({size: seconds * feed.steps_per_epoch + eval_seconds
               for size, seconds in step_seconds.items()}, compile_seconds)


def fit(config: ml_collections.ConfigDict, workdir: Any, resuming: bool, parallel: Parallel,
        feed: Any, eval_batches: Any, elapsed_seconds: float) -> tuple[RunPlan, Refit]:
  """The run's plan, its epochs (and warm-up) sized to `config.time_budget_minutes`, and its
  second sizing (one that never fires without a budget, or when resuming: a resumed command's
  clock is not the budget's). A resumed run keeps the plan it saved."""
  steps_per_epoch = feed.steps_per_epoch
  if resuming:
    saved = plan_lib.load(workdir)
    if saved is None:  # A run from before plans: its config.json holds the sized epochs.
      old = workdirs.load_config(workdir)
      saved = RunPlan.create(config, steps_per_epoch, old.num_epochs,
                             old.optimizer.warmup_epochs)
    return saved, Refit()
  if not config.time_budget_minutes:
    return RunPlan.create(config, steps_per_epoch), Refit()
  progressive.check(config)
  tic = time.perf_counter()
  pace = _measure(config, parallel, feed, eval_batches)
  elapsed_seconds += time.perf_counter() - tic
  budget_seconds = 60 * config.time_budget_minutes
  epochs = _agreed(epochs_that_fit(budget_seconds, elapsed_seconds, pace, config))
  warmup_epochs = plan_lib.warmup_epochs_of(config, epochs, scaled=True)
  plan = RunPlan.create(config, steps_per_epoch, epochs, warmup_epochs)
  logging.info('time budget %g min: an epoch takes %s (training and evaluation), %.1f s gone; '
               '%d epochs fit (warm-up %.2f epochs)', config.time_budget_minutes,
               ', '.join(f'{seconds:.1f} s at {size}x{size}'
                         for size, seconds in pace.epoch_seconds.items()),
               elapsed_seconds, epochs, warmup_epochs)
  at_epoch = max(2, math.floor(warmup_epochs))
  return plan, Refit(budget_seconds, pace, at_epoch if at_epoch < epochs else 0)
