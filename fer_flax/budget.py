"""Runs sized by a time budget: as many epochs as fit, from the measured speed of the first steps.

With `config.time_budget_minutes`, a new run times its own compiled train step for 20 s (after
three warm calls) and one evaluation of its split on a throwaway state, then sets `num_epochs` to
what fits in the budget (counted from the command's start), and scales `optimizer.warmup_epochs`
with it, so the schedule keeps its shape on slower and faster machines. The sized config is what
`config.json` keeps; a resumed run takes its epochs from there instead of measuring again.
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

from fer_flax import evaluate, models, optim, steps, workdirs
from fer_flax.sharding import Parallel

# Checkpoint saves, the last wait and the machine slowing under sustained load, as a share of the
# budget: on the 2-core CPU `configs/cpu.py`'s epochs ran 10-11% slower, from the second on, than
# the 20 s timed here (63.4 s measured, 70.5 s run), and 100 calls alone 8% slower than their
# first 20 s.
RESERVE = 0.12
# The calls just after compiling run slower than the rest; the calls after them are timed for at
# least this long, as the CPU's speed wanders from call to call by a few per cent.
_WARM_CALLS = 3
_TIMED_SECONDS = 20.0


def epochs_that_fit(budget_seconds: float, elapsed_seconds: float, compile_seconds: float,
                    epoch_seconds: float) -> int:
  """Whole epochs (at least one) that fit in what is left of the budget after a recompile."""
  left = budget_seconds * (1 - RESERVE) - elapsed_seconds - compile_seconds
  return max(1, math.floor(left / epoch_seconds))


def _seconds_per_epoch(config: ml_collections.ConfigDict, parallel: Parallel, feed: Any,
                       eval_batches: Any) -> tuple[float, float]:
  """(seconds an epoch of training and its evaluation take, seconds the first call compiled)."""
  model = models.create_model(config.model)
  total_steps = feed.steps_per_epoch * config.num_epochs
  schedule = optim.create_learning_rate_schedule(config, feed.steps_per_epoch, total_steps)
  state, rng = steps.initial_state(config, model, schedule, parallel)
  train_step = steps.compile_train_steps(config, parallel)
  calls = iter(feed.batches(0, total_steps))
  tic = time.perf_counter()
  state, metrics = train_step(state, next(calls), rng)
  jax.block_until_ready(metrics)
  first_call = time.perf_counter() - tic
  seconds, step_counts = [], []
  for batches in calls:
    tic = time.perf_counter()
    state, metrics = train_step(state, batches, rng)
    jax.block_until_ready(metrics)
    seconds.append(time.perf_counter() - tic)
    step_counts.append(batches['label'].shape[0])
    if len(seconds) > _WARM_CALLS and sum(seconds[_WARM_CALLS:]) >= _TIMED_SECONDS:
      break
  if len(seconds) > _WARM_CALLS:  # past the warm calls; a short run times all it has
    seconds, step_counts = seconds[_WARM_CALLS:], step_counts[_WARM_CALLS:]
  if seconds:
    call_seconds, seconds_per_step = np.mean(seconds), sum(seconds) / sum(step_counts)
  else:  # A run of one call: its time, compilation included, is all there is to go by.
    call_seconds, seconds_per_step = first_call, first_call / config.steps_per_call
  eval_step = steps.compile_eval_step(model.apply, parallel)
  evaluate.predictions(eval_step, state.variables(), eval_batches)  # compiles
  tic = time.perf_counter()
  evaluate.predictions(eval_step, state.variables(), eval_batches)
  eval_seconds = time.perf_counter() - tic
  return seconds_per_step * feed.steps_per_epoch + eval_seconds, first_call - call_seconds


def fit(config: ml_collections.ConfigDict, workdir: Any, resuming: bool, parallel: Parallel,
        feed: Any, eval_batches: Any, elapsed_seconds: float) -> ml_collections.ConfigDict:
  """`config` with `num_epochs` (and the warm-up) sized to `config.time_budget_minutes`."""
  if not config.time_budget_minutes:
    return config
  sized = config.copy_and_resolve_references()
  if resuming:
    saved = workdirs.load_config(workdir)
    sized.num_epochs = saved.num_epochs
    sized.optimizer.warmup_epochs = saved.optimizer.warmup_epochs
    return sized
  tic = time.perf_counter()
  epoch_seconds, compile_seconds = _seconds_per_epoch(config, parallel, feed, eval_batches)
  elapsed_seconds += time.perf_counter() - tic
  epochs = epochs_that_fit(60 * config.time_budget_minutes, elapsed_seconds, compile_seconds,
                           epoch_seconds)
  # Every process trains for process 0's count (their clocks differ a little).
  epochs = int(multihost_utils.broadcast_one_to_all(np.int32(epochs)))
  sized.num_epochs = epochs
  sized.optimizer.warmup_epochs = config.optimizer.warmup_epochs * epochs / config.num_epochs
  logging.info('time budget %g min: an epoch takes %.1f s (training and evaluation), %.1f s '
               'gone; %d epochs fit (warm-up %.2f epochs)', config.time_budget_minutes,
               epoch_seconds, elapsed_seconds, epochs, sized.optimizer.warmup_epochs)
  return sized
