"""`python -m fer_flax.evaluate` and its functions: the best checkpoint, the report and the
confusion matrix, ensembles."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fer_flax import evaluate
from fer_flax.core.errors import UserError
from fer_flax.data import fer2013
from fer_flax.serve import loading, package
from fer_flax.train import evaluation, workdirs
from tests import helpers


def test_evaluate_restores_the_best_checkpoint(finished_run, tmp_path):
  _, workdir, _ = finished_run
  result = evaluate.evaluate_model(loading.load_model(workdir=str(workdir)), 'public_test')
  best = helpers.best_record(workdir)
  assert result['step'] == best['step'] and result['examples'] == 28
  assert result['accuracy'] == pytest.approx(best['accuracy'])
  assert result['loss'] == pytest.approx(best['loss'], rel=1e-5)
  assert np.sum(result['confusion_matrix']) == 28
  assert [m['support'] for m in result['per_class'].values()] == [4] * 7
  step_85 = loading.load_model(workdir=str(workdir), step=85)
  assert evaluate.evaluate_model(step_85, 'train')['examples'] == 140
  with pytest.raises(UserError, match=r'no checkpoint at step 3 in'):
    loading.load_model(workdir=str(workdir), step=3)


def test_evaluate_cli_writes_the_report_and_the_confusion_matrix(finished_run):
  _, workdir, _ = finished_run
  result = subprocess.run([sys.executable, '-m', 'fer_flax.evaluate', f'--workdir={workdir}',
                           '--split=public_test', '--tta=flip'], cwd=helpers.REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  step = helpers.best_record(workdir)['step']
  report = json.loads((workdir / 'eval' / f'public_test-step{step}-flip.json').read_text())
  assert report['tta'] == 'flip' and report['examples'] == 28
  assert set(report['per_class']) == set(fer2013.EMOTIONS)
  assert (workdir / 'eval' / f'public_test-step{step}-flip.png').stat().st_size > 10_000
  assert 'precision' in result.stdout and 'confusion matrix' in result.stdout


def test_evaluate_cli_scores_an_ensemble_by_its_mean_probability(finished_run, tmp_path):
  config, workdir, _ = finished_run
  best_step = helpers.best_record(workdir)['step']
  early_step = min(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                   if p.name.isdigit() and int(p.name) != best_step)
  package.save(str(workdir), tmp_path / 'early', step=early_step)  # A second, other member.
  out = tmp_path / 'ensemble.json'
  result = subprocess.run([sys.executable, '-m', 'fer_flax.evaluate', f'--workdir={workdir}',
                           f'--model={tmp_path / "early"}', '--split=public_test',
                           f'--json={out}'], cwd=helpers.REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(out.read_text())
  best = workdirs.restore_variables(workdir)[1]
  early = package.load(tmp_path / 'early')[1]
  p_best, labels = evaluation.probabilities(config, best, 'public_test')
  p_early, _ = evaluation.probabilities(config, early, 'public_test')
  expected = evaluation.score((p_best + p_early) / 2, labels)
  assert report['accuracy'] == expected['accuracy']
  assert report['loss'] == pytest.approx(expected['loss'], rel=1e-3)
  assert [m['step'] for m in report['members']] == [best_step, early_step]
  assert report['members'][1]['accuracy'] == evaluation.score(p_early, labels)['accuracy']
  assert 'ensemble of 2' in result.stdout


def test_evaluate_an_exported_model(finished_run, packed_run):
  from fer_flax import evaluate  # pylint: disable=g-import-not-at-top
  from fer_flax.serve import loading  # pylint: disable=g-import-not-at-top
  shipped = evaluate.evaluate_model(loading.load_model(str(packed_run)), 'public_test')
  original = evaluate.evaluate_model(loading.load_model(workdir=str(finished_run[1])),
                                     'public_test')
  assert shipped['step'] == original['step'] and shipped['examples'] == 28
  assert shipped['accuracy'] == pytest.approx(original['accuracy'], abs=1 / 28)
  assert shipped['loss'] == pytest.approx(original['loss'], rel=1e-2)
