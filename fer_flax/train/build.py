"""The one way to set a run up: model, learning-rate schedule, first state and compiled steps, from
the config and the run's plan. Training, the time budget's measurement and the benchmark all start
here, so they time and train the same thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import ml_collections
import optax

from fer_flax import models
from fer_flax.core.mesh import Parallel
from fer_flax.train import optim, step_fns
from fer_flax.train.plan import RunPlan


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run trains with. `train_step(state, batches, rng, image_size)` and
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
