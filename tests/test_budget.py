"""A time budget sizes a run from its measured speed, and a resumed run keeps that size."""

import json
import time

import pytest

from fer_flax import budget, train, writers
from tests import conftest


def test_the_epochs_that_fit_leave_the_reserve_the_time_gone_and_a_recompile():
  # 600 s less 12% is 528 s; 30 s are gone and 10 s recompile: 488 s hold 9 epochs of 50 s.
  assert budget.epochs_that_fit(600, 30, 10, 50) == 9
  assert budget.epochs_that_fit(600, 590, 10, 50) == 1  # never none


def test_a_budget_sizes_the_run_and_its_warm_up_and_a_resume_keeps_them(small_archive, tfds_dir,
                                                                        tmp_path):
  config = conftest.tiny_config(small_archive, tfds_dir, num_epochs=4, time_budget_minutes=0.25,
                                **{'optimizer.warmup_epochs': 2.0, 'data.pipeline': 'memory'})
  started = time.perf_counter()
  train.train_and_evaluate(config, str(tmp_path), started)
  saved = json.loads((tmp_path / 'config.json').read_text())
  epochs = saved['num_epochs']
  assert epochs >= 1 and saved['time_budget_minutes'] == 0.25
  assert saved['optimizer']['warmup_epochs'] == pytest.approx(2.0 * epochs / 4)
  evaluations = [r for r in writers.read_run_metrics(tmp_path) if r['split'] == 'public_test']
  assert len(evaluations) == epochs  # one evaluation an epoch, for the epochs it chose
  # The same command again: the finished run is recognised, not measured and resized.
  train.train_and_evaluate(config, str(tmp_path))
  assert json.loads((tmp_path / 'config.json').read_text())['num_epochs'] == epochs
