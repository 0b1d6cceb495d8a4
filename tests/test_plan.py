"""The run's plan: derived from the config, resized by the budget, saved beside config.json."""

import json

import pytest

from fer_flax.core.errors import UserError
from fer_flax.train import plan as plan_lib
from fer_flax.train.plan import RunPlan
from tests import helpers


def test_a_plan_follows_its_config_and_a_resize_keeps_the_warm_up():
  config = helpers.tiny_config('', '', num_epochs=4, **{
      'optimizer.warmup_epochs': 1.5, 'progressive.sizes': (32,),
      'progressive.fractions': (0.5,)})
  plan = RunPlan.create(config, 10)
  assert plan == RunPlan(10, 4, 15, (32, 32, 48, 48))
  assert (plan.total_steps, plan.image_size(19), plan.image_size(20)) == (40, 32, 48)
  assert RunPlan.create(config, 10, 8, 3.0) == RunPlan(10, 8, 30, (32,) * 4 + (48,) * 4)
  assert plan.resized(config, 6) == RunPlan(10, 6, 15, (32, 32, 32, 48, 48, 48))
  assert config.num_epochs == 4  # the config is never written back


def test_a_saved_plan_loads_equal_and_a_workdir_without_one_has_none(tmp_path):
  config = helpers.tiny_config('', '', num_epochs=3)
  plan = RunPlan.create(config, 7)
  assert plan_lib.load(tmp_path) is None
  plan.save(tmp_path)
  assert plan_lib.load(tmp_path) == plan


def test_a_warm_up_given_as_a_share_follows_the_epochs():
  config = helpers.tiny_config('', '', num_epochs=8, **{'optimizer.warmup_epochs': 3.0,
                                                        'optimizer.warmup_share': 0.25})
  assert RunPlan.create(config, 10).warmup_steps == 20
  assert RunPlan.create(config, 10, 40).warmup_steps == 100
  config.optimizer.warmup_share = 0.0
  assert RunPlan.create(config, 10, 40).warmup_steps == 30  # epochs, whatever the run's length


def test_the_last_epochs_may_train_clean_and_old_plans_have_none(tmp_path):
  config = helpers.tiny_config('', '', num_epochs=4, **{'augment.clean_last_epochs': 1})
  plan = RunPlan.create(config, 10)
  assert [plan.augmented(step) for step in (0, 29, 30, 39)] == [True, True, False, False]
  assert plan.resized(config, 6).augmented(49) and not plan.resized(config, 6).augmented(50)
  plan.save(tmp_path)
  saved = json.loads((tmp_path / plan_lib.PLAN_FILE).read_text())
  del saved['clean_epochs']  # as plans saved before the field existed
  (tmp_path / plan_lib.PLAN_FILE).write_text(json.dumps(saved))
  assert plan_lib.load(tmp_path).augmented(39)
  config.augment.clean_last_epochs = 4
  with pytest.raises(UserError, match='config.augment.clean_last_epochs=4 in a run of 4 epochs'):
    RunPlan.create(config, 10)
