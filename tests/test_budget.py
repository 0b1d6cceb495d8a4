"""A time budget sizes a run from its measured speed, sizes it again from its own epochs at the
end of the warm-up, and a resumed run keeps that size."""

import json
import re
import time

import jax
import numpy as np

from fer_flax.train import budget, loop, workdirs, writers
from fer_flax.train import plan as plan_lib
from fer_flax.train.plan import RunPlan
from tests import helpers


def _pace(**epoch_seconds):
  """A Pace from sizes written s48=50.0, each compiling in 10 s."""
  sizes = {int(k[1:]): v for k, v in epoch_seconds.items()}
  return budget.Pace(sizes, {size: 10.0 for size in sizes})


def test_the_epochs_that_fit_leave_the_reserve_the_time_gone_and_a_recompile():
  config = helpers.tiny_config('', '', num_epochs=30)
  # 600 s less 5% is 570 s; 30 s are gone and 10 s recompile: 530 s hold 10 epochs of 50 s.
  assert budget.epochs_that_fit(600, 30, _pace(s48=50.0), config) == 10
  assert budget.epochs_that_fit(600, 590, _pace(s48=50.0), config) == 1  # never none
  assert budget.epochs_that_fit(600, 590, _pace(s48=50.0), config, done=4) == 5


def test_progressive_epochs_are_paced_at_their_own_sizes():
  config = helpers.tiny_config('', '', num_epochs=30, **{'progressive.sizes': (32,),
                                                         'progressive.fractions': (0.5,)})
  # 540 s left, two sizes to compile (20 s): 13 epochs, 7 of 25 s and 6 of 50 s, take 475 s;
  # 14 would take 525 s.
  assert budget.epochs_that_fit(600, 30, _pace(s48=50.0, s32=25.0), config) == 13
  # Past the small epochs only the full size is left to compile: 570 - 400 - 10 hold 3 of 50 s.
  assert budget.epochs_that_fit(600, 400, _pace(s48=50.0, s32=25.0), config, done=10) == 13


def test_the_refit_paces_the_epochs_after_the_first_at_its_epoch_only():
  config = helpers.tiny_config('', '', num_epochs=30, time_budget_minutes=60)
  plan = RunPlan.create(config, 10)
  refit = budget.Refit(3600, _pace(s48=80.0), at_epoch=5)
  assert refit(config, plan, 1, 160.0) is None  # the first epoch compiled: not paced
  assert all(refit(config, plan, epoch, 60.0 + 100 * epoch) is None for epoch in (2, 3, 4))
  # Epochs 2-5 took 100 s each; 3420 s less 560 gone and 10 to recompile hold 28 more.
  resized = refit(config, plan, 5, 560.0)
  assert resized == RunPlan(10, 5 + 28, plan.warmup_steps, (48,) * 33)
  assert budget.Refit()(config, plan, 1, 1.0) is None
  assert budget.Refit()(config, plan, 5, 5.0) is None
  resumed = budget.Refit(3600, _pace(s48=80.0), at_epoch=5)  # never saw its first epoch end
  assert resumed(config, plan, 5, 560.0) is None


def test_a_budget_sizes_the_run_and_its_warm_up_and_a_resume_keeps_them(small_archive, tfds_dir,
                                                                        tmp_path, caplog):
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=4, time_budget_minutes=0.25,
                                **{'optimizer.warmup_epochs': 2.0, 'data.pipeline': 'memory'})
  started = time.perf_counter()
  with caplog.at_level('INFO'):
    loop.train_and_evaluate(config, str(tmp_path), started)
  first_sized = int(re.search(r'(\d+) epochs fit \(warm-up', caplog.text).group(1))
  # config.json is what was asked for; the plan beside it, what the budget made of it.
  assert json.loads(workdirs.load_config(tmp_path).to_json()) == json.loads(config.to_json())
  plan = plan_lib.load(tmp_path)
  epochs = plan.num_epochs
  assert epochs >= 1
  # The warm-up: its share (2 of 4 epochs) of the epochs first sized, which a refit keeps.
  assert plan.warmup_steps == int(2.0 * first_sized / 4 * plan.steps_per_epoch)
  evaluations = [r for r in writers.read_run_metrics(tmp_path) if r['split'] == 'public_test']
  assert len(evaluations) == epochs  # one evaluation an epoch, for the epochs it chose
  # The same command again: the finished run is recognised, not measured and resized.
  loop.train_and_evaluate(config, str(tmp_path))
  assert plan_lib.load(tmp_path) == plan


def test_a_refit_run_equals_one_sized_so_from_the_start(small_archive, tfds_dir, tmp_path,
                                                        monkeypatch):
  # Three epochs fit at the start, and three more after the warm-up's two: the run trains five.
  # Its warm-up kept its steps, so the learning rates before the refit stay what they were.
  monkeypatch.setattr(budget, 'epochs_that_fit', lambda *args, done=0: done + 3)
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=3, time_budget_minutes=1,
                                **{'optimizer.warmup_epochs': 2.0, 'optimizer.schedule': 'onecycle',
                                   'data.pipeline': 'memory'})
  refit = loop.train_and_evaluate(config, str(tmp_path / 'refit'))
  plan = plan_lib.load(tmp_path / 'refit')
  assert (plan.num_epochs, plan.warmup_steps) == (5, 2 * plan.steps_per_epoch)
  assert (json.loads(workdirs.load_config(tmp_path / 'refit').to_json())
          == json.loads(config.to_json()))
  records = writers.read_run_metrics(tmp_path / 'refit')
  assert len([r for r in records if r['split'] == 'public_test']) == 5

  plain = config.copy_and_resolve_references()
  plain.time_budget_minutes, plain.num_epochs = 0.0, 5
  plain = loop.train_and_evaluate(plain, str(tmp_path / 'plain'))
  assert refit.step == plain.step
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               refit.params, plain.params)


def test_a_budget_times_each_progressive_size_and_sizes_the_run(small_archive, tfds_dir,
                                                                  tmp_path, caplog):
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=4, time_budget_minutes=0.25,
                                **{'progressive.sizes': (24,), 'progressive.fractions': (0.5,),
                                   'data.pipeline': 'memory'})
  with caplog.at_level('INFO'):
    loop.train_and_evaluate(config, str(tmp_path))
  assert re.search(r'an epoch takes [\d.]+ s at 48x48, [\d.]+ s at 24x24', caplog.text)
  epochs = plan_lib.load(tmp_path).num_epochs
  evaluations = [r for r in writers.read_run_metrics(tmp_path) if r['split'] == 'public_test']
  assert len(evaluations) == epochs


def test_a_budget_run_from_before_plans_resumes_with_the_epochs_its_config_json_holds(
    small_archive, tfds_dir, tmp_path):
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=3,
                                **{'data.pipeline': 'memory'})
  loop.train_and_evaluate(config, str(tmp_path))  # three epochs, as a budget might have sized
  # What such a run left: no plan.json, and config.json with its budget and the sized epochs.
  (tmp_path / plan_lib.PLAN_FILE).unlink()
  budgeted = helpers.tiny_config(small_archive, tfds_dir, num_epochs=30, time_budget_minutes=60,
                                  **{'data.pipeline': 'memory'})
  sized = json.loads(budgeted.to_json())
  sized['num_epochs'] = 3
  (tmp_path / workdirs.CONFIG_FILE).write_text(json.dumps(sized))
  state = loop.train_and_evaluate(budgeted, str(tmp_path))
  assert int(state.step) == plan_lib.load(tmp_path).total_steps
  assert plan_lib.load(tmp_path).num_epochs == 3
