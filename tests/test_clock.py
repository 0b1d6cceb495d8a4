"""The run's clock: every evaluation record carries its times."""

import itertools

from fer_flax.train import writers


def test_every_evaluation_carries_its_times(finished_run):
  _, workdir, _ = finished_run
  evals = [r for r in writers.read_metrics(workdir / writers.METRICS_FILE)
           if r['split'] == 'public_test']
  assert len(evals) == 5
  for earlier, later in itertools.pairwise(evals):
    assert later['elapsed_seconds'] > earlier['elapsed_seconds']
    assert later['train_seconds'] > earlier['train_seconds']
  for r in evals:
    assert 0 < r['train_seconds'] < r['elapsed_seconds']
    assert 0 < r['compile_seconds'] < r['elapsed_seconds']
