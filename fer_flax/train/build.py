"""The one way to set a run up: model, learning-rate schedule, first state and compiled steps, from
the config and the run's plan. Training, the time budget's measurement and the benchmark all start
here, so they time and train the same thing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import ml_collections
import optax

from fer_flax import models
from fer_flax.core.mesh import Parallel
from fer_flax.data import feeds
from fer_flax.models import whitening
from fer_flax.train import optim, step_fns
from fer_flax.train.plan import RunPlan


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run trains with. `train_step(state, batches, rng, image_size, augmented)` and
  `eval_step(variables, batch)` are compiled for the mesh (each image size once)."""
  model: nn.Module
  schedule: optax.Schedule
  state: step_fns.TrainState
  rng: jax.Array
  train_step: Callable
  eval_step: Callable


def build(config: ml_collections.ConfigDict, plan: RunPlan, parallel: Parallel) -> Run:
  """The run `config` and `plan` describe, its state initialised from `config.seed`."""
  model = models.create_model(config.model)
  schedule = optim.create_learning_rate_schedule(config, plan)
  state, rng = step_fns.initial_state(config, model, schedule, parallel)
  return Run(model, schedule, state, rng, step_fns.compile_train_steps(config, parallel),
             step_fns.compile_eval_step(model.apply, parallel))


def replanned(config: ml_collections.ConfigDict, plan: RunPlan,
              state: step_fns.TrainState) -> tuple[optax.Schedule, step_fns.TrainState]:
  """The schedule of a new `plan`, and `state` with the optimizer that follows it (the train step
  compiles anew for it)."""
  schedule = optim.create_learning_rate_schedule(config, plan)
  return schedule, state.replace(tx=optim.create_optimizer(config, schedule))


def _fit_whitening(state: step_fns.TrainState, images: jax.Array,
                   size: int) -> step_fns.TrainState:
  kernel = whitening.whitening_kernel(models.preprocess(images), size)
  params = whitening.with_kernel(state.params, kernel)
  # The optimizer starts again from the fitted weights (Lookahead keeps a copy of them).
  return state.replace(params=params, opt_state=state.tx.init(params),
                       ema=whitening.with_kernel(state.ema, kernel))


def fit_to_data(config: ml_collections.ConfigDict, state: step_fns.TrainState,
                feed: feeds.TrainFeed, parallel: Parallel) -> step_fns.TrainState:
  """A new run's first state with what its model takes from the data before training: the
  patch-whitening kernel (`config.model.whiten`) from the faces of the feed's first call (320
  faces in `cpu.py`'s 10 batches of 32). Unchanged for models without it."""
  if not config.model.get('whiten', 0):
    return state
  batches = next(iter(feed.batches(0, feed.steps_per_epoch)))
  return whitening_fit(config, parallel)(state, batches['image'])


def whitening_fit(config: ml_collections.ConfigDict, parallel: Parallel) -> Callable:
  """`(state, stacked faces) -> state` with the whitening kernel fitted, jitted for the mesh."""
  return parallel.jit(functools.partial(_fit_whitening, size=config.model.whiten),
                      in_shardings=(parallel.replicated, parallel.stacked),
                      out_shardings=parallel.replicated, donate_argnums=(0,))
