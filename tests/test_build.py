"""One way to set a run up: the same config, plan and seed give the same run, whoever builds it."""

import jax
import numpy as np
import pytest

from fer_flax.core.mesh import Parallel
from fer_flax.train import build
from fer_flax.train.plan import RunPlan
from tests import helpers


def test_a_run_is_built_from_its_config_and_plan_and_steps_from_its_seed():
  config = helpers.tiny_config('', '', num_epochs=2, **{'optimizer.warmup_epochs': 1.0,
                                                         'optimizer.schedule': 'cosine'})
  parallel = Parallel(jax.devices()[:1])
  plan = RunPlan.create(config, 5)
  run, again = build.build(config, plan, parallel), build.build(config, plan, parallel)
  jax.tree.map(np.testing.assert_array_equal, run.state.params, again.state.params)
  # Five warm-up steps, then a cosine over the other five.
  assert float(run.schedule(0)) == 0.0
  assert float(run.schedule(5)) == pytest.approx(config.optimizer.learning_rate)
  batch = {'image': np.zeros((1, 8, 48, 48, 1), np.uint8), 'label': np.zeros((1, 8), np.int32)}
  batch = parallel.to_global(batch, parallel.stacked)
  state, metrics = run.train_step(run.state, batch, run.rng)
  assert int(state.step) == 1 and float(metrics['count']) == 8
  longer = plan.resized(config, 4)
  schedule, resized = build.replanned(config, longer, state)
  # The same warm-up; the cosine now spans fifteen steps.
  assert float(schedule(3)) == float(run.schedule(3))
  assert float(schedule(9)) > float(run.schedule(9)) and float(schedule(20)) < 1e-6
  assert int(resized.step) == 1
