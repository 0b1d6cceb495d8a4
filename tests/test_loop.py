"""The training loop learns, resumes exactly after kill -9, refuses mixed configs, evaluates the
moving average, stops on divergence keeping its good checkpoints, trains each epoch at its
progressive size, and trains the fast-training options."""

import json
import pathlib
import re
import shutil
import subprocess

import jax
import ml_collections
import numpy as np
import pytest

from fer_flax import evaluate
from fer_flax.core.errors import UserError
from fer_flax.serve import loading, package
from fer_flax.train import evaluation, loop, step_fns, workdirs, writers
from tests import helpers


def test_loss_falls_and_the_task_is_learned(finished_run):
  _, workdir, state = finished_run
  losses = [r['loss'] for r in helpers.eval_records(workdir, 'train')]
  assert losses[-1] < 0.5 * losses[0]
  evals = helpers.eval_records(workdir, 'public_test')
  assert [r["step"] for r in evals] == [17, 34, 51, 68, 85]  # one per epoch of 140 // 8 steps
  assert evals[-1]['accuracy'] > 0.8  # chance is 1/7
  assert int(state.step) == 85


def test_workdir_holds_config_checkpoints_and_summaries(finished_run):
  config, workdir, _ = finished_run
  assert json.loads((workdir / 'config.json').read_text())['model']['hidden'] == 16
  assert list(workdir.glob('events.out.tfevents.*'))
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  best = helpers.best_record(workdir)['step']
  assert steps == sorted({best, *[17 * e for e in range(5 - config.keep_checkpoints + 1, 6)]})


def test_finished_run_rerun_is_a_noop(finished_run, caplog):
  config, workdir, state = finished_run
  before = (workdir / writers.METRICS_FILE).read_text()
  with caplog.at_level('INFO'):
    again = loop.train_and_evaluate(config, str(workdir))
  assert 'already finished at step 85' in caplog.text
  assert (workdir / writers.METRICS_FILE).read_text() == before
  jax.tree.map(np.testing.assert_array_equal, again.params, state.params)


def test_different_config_in_same_workdir_is_refused(finished_run):
  config, workdir, _ = finished_run
  changed = config.copy_and_resolve_references()
  changed.optimizer.learning_rate = 0.1
  with pytest.raises(UserError, match=r'holds a run with a different config \(optimizer.'
                                      r'learning_rate: 0.003 -> 0.1\); use a new --workdir'):
    loop.train_and_evaluate(changed, str(workdir))


def test_moved_data_may_resume(finished_run, tmp_path):
  config, workdir, _ = finished_run
  moved = config.copy_and_resolve_references()
  moved.data.path = str(tmp_path / 'elsewhere' / 'fer2013.zip')
  pathlib.Path(moved.data.path).parent.mkdir()
  pathlib.Path(moved.data.path).write_bytes(pathlib.Path(config.data.path).read_bytes())
  saved = (workdir / 'config.json').read_text()
  # Same data, new place: the finished run is recognised (its final state restored), not refused.
  state = loop.train_and_evaluate(moved, str(workdir))
  assert int(state.step) == int(finished_run[2].step)
  jax.tree.map(np.testing.assert_array_equal, state.params, jax.device_get(finished_run[2].params))
  assert (workdir / 'config.json').read_text() == saved  # still the path it trained from


def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path, small_archive, tfds_dir):
  # With the random parts of the recipe on: augmentation and its draws, mixup, the moving average.
  overrides = {'data.path': small_archive, 'data.tfds_data_dir': tfds_dir, 'num_epochs': 4,
               'checkpoint_every_steps': 1, 'optimizer.learning_rate': 3e-3,
               'augment.flip': True, 'augment.rotation': 10.0, 'augment.erase_probability': 0.5,
               'augment.mixup_alpha': 0.2, 'ema_decay': 0.9}
  killed = tmp_path / 'killed'
  proc = subprocess.Popen(helpers.main_command(killed, overrides), cwd=helpers.REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  helpers.signal_when(lambda: max(helpers.checkpoint_steps(killed), default=0) >= 5, proc,
                       helpers.KILL, timeout=120)
  proc.wait()
  done = helpers.checkpoint_steps(killed)
  assert 5 <= max(done) < 68, 'the run must be killed mid-way for this test to mean anything'

  config = helpers.tiny_config(small_archive, tfds_dir, **{
      k: v for k, v in overrides.items() if not k.startswith('data.')})
  resumed = loop.train_and_evaluate(config, str(killed))
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  for part in ('params', 'opt_state', 'ema'):
    jax.tree.map(np.testing.assert_array_equal, getattr(resumed, part), getattr(straight, part))
  for split in ('train', 'public_test'):
    steps = [r['step'] for r in helpers.eval_records(killed, split)]
    straight_steps = [r['step'] for r in helpers.eval_records(tmp_path / 'straight', split)]
    assert steps == sorted(set(steps)) == straight_steps


def test_a_run_that_failed_before_any_checkpoint_restarts_with_a_fixed_config(
    tmp_path, small_archive, tfds_dir):
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=1)
  typo = config.copy_and_resolve_references()
  typo.optimizer.name = 'adma'
  with pytest.raises(UserError, match="unknown optimizer 'adma'"):
    loop.train_and_evaluate(typo, str(tmp_path))
  assert int(loop.train_and_evaluate(config, str(tmp_path)).step) == 17


def test_training_evaluates_and_keeps_the_moving_average(tmp_path, small_archive, tfds_dir):
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=2, ema_decay=0.9)
  workdir = tmp_path / 'run'
  state = loop.train_and_evaluate(config, str(workdir))
  recorded = helpers.eval_records(workdir, 'public_test')[-1]
  ema = evaluation.evaluate_variables(config, state.ema, 'public_test')
  raw = evaluation.evaluate_variables(config, {'params': state.params, 'batch_stats': {}},
                                  'public_test')
  assert recorded['loss'] == pytest.approx(ema['loss'], rel=1e-4)
  assert recorded['loss'] != pytest.approx(raw['loss'], rel=1e-3)
  result = evaluate.evaluate_model(loading.load_model(workdir=str(workdir), step=recorded['step']),
                                   'public_test')
  assert result['loss'] == pytest.approx(ema['loss'], rel=1e-4)


def test_a_batch_norm_model_trains_restores_and_exports(tmp_path, small_archive, tfds_dir):
  from fer_flax.serve.predictor import Predictor
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=3)
  config.model = ml_collections.ConfigDict(
      {'name': 'compact', 'stem_width': 4, 'widths': (8, 16), 'strides': (2, 2)})
  state = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert jax.tree.leaves(state.batch_stats)
  result = evaluate.evaluate_model(loading.load_model(workdir=str(tmp_path / 'run')),
                                   'public_test')
  assert result['accuracy'] == pytest.approx(helpers.best_record(tmp_path / 'run')['accuracy'])
  package.save(str(tmp_path / 'run'), tmp_path / 'exported')
  shipped = Predictor.pretrained(tmp_path / 'exported', detect=False)
  from_checkpoint = Predictor.from_workdir(str(tmp_path / 'run'), detect=False)
  faces = [helpers.face(label, np.random.default_rng(label)) for label in range(7)]
  np.testing.assert_allclose(shipped.classify(faces), from_checkpoint.classify(faces), atol=5e-3)


def test_a_diverging_run_stops_with_one_line_naming_the_steps_and_keeps_its_good_checkpoints(
    tmp_path, small_archive):
  # The learning rate warms up from 0 over the first epoch to a peak no network survives.
  config = helpers.tiny_config(small_archive, pathlib.Path(''), **{
      'data.pipeline': 'memory', 'data.tfds_data_dir': '', 'checkpoint_every_steps': 1,
      'keep_checkpoints': 100, 'optimizer.name': 'sgd', 'optimizer.learning_rate': 1e8,
      'optimizer.warmup_epochs': 1.0})
  with pytest.raises(loop.Diverged) as error:
    loop.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  assert '\n' not in message
  assert re.match(r'training diverged: the training loss became NaN or infinite between steps '
                  r'\d+ and \d+, at learning rate .*; its checkpoints up to step \d+ are kept\. '
                  r'Likely cause: too high a learning rate; train in a new --workdir with a '
                  r'lower --config.optimizer.learning_rate', message)
  saved = helpers.checkpoint_steps(tmp_path)
  assert saved and f'up to step {saved[-1]} are kept' in message
  for step in saved:
    variables = workdirs.restore_variables(tmp_path, step)[1]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


def test_each_epoch_trains_at_its_progressive_size_and_the_last_clean(small_archive, tfds_dir,
                                                                       tmp_path, monkeypatch):
  sizes, augmented, compile_train_steps = [], [], step_fns.compile_train_steps

  def recording(*args):
    train_steps = compile_train_steps(*args)

    def call(state, batches, rng, image_size, augment):
      sizes.extend([image_size] * batches['label'].shape[0])
      augmented.extend([augment] * batches['label'].shape[0])
      return train_steps(state, batches, rng, image_size, augment)
    return call

  monkeypatch.setattr(step_fns, 'compile_train_steps', recording)
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=3,
                                **{'progressive.sizes': (24, 32),
                                   'progressive.fractions': (0.3, 0.3),
                                   'augment.clean_last_epochs': 1,
                                   'data.pipeline': 'memory'})
  state = loop.train_and_evaluate(config, str(tmp_path))
  assert sizes == [24] * 17 + [32] * 17 + [48] * 17 and int(state.step) == 51
  assert augmented == [True] * 34 + [False] * 17
  # Evaluated at 48x48 after every epoch.
  assert len(helpers.eval_records(tmp_path, 'public_test')) == 3


def test_the_fast_training_options_learn_keep_the_whitening_frozen_and_resume(tmp_path,
                                                                             small_archive):
  config = helpers.memory_config(small_archive, num_epochs=3, keep_checkpoints=10, **{
      'augment.flip': True, 'augment.alternate_flips': True, 'augment.clean_last_epochs': 1,
      'optimizer.lookahead_steps': 4, 'ema_decay': 0.9})
  config.model = ml_collections.ConfigDict({
      'name': 'vgg', 'stages': ((4,), (8,)), 'hidden': (16,), 'dropout_rate': 0.0,
      'dtype': 'float32', 'whiten': 2, 'dirac_init': True, 'norm_scale': False,
      'head_norm': True})
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  losses = [r['loss'] for r in helpers.eval_records(tmp_path / 'straight', 'train')]
  assert losses[-1] < 0.7 * losses[0]
  kernel = straight.params['PatchWhitening_0']['kernel']
  assert np.abs(kernel).max() > 1  # fitted to the faces, and never trained or decayed since:
  np.testing.assert_array_equal(straight.ema['params']['PatchWhitening_0']['kernel'], kernel)
  # Resumed after the first epoch (its kernel restored, not fitted again), it ends the same.
  assert helpers.checkpoint_steps(tmp_path / 'straight') == [17, 34, 51]
  shutil.copytree(tmp_path / 'straight', tmp_path / 'resumed')
  for step in (34, 51):
    shutil.rmtree(tmp_path / 'resumed' / 'checkpoints' / str(step))
  resumed = loop.train_and_evaluate(config, str(tmp_path / 'resumed'))
  for part in ('params', 'opt_state', 'ema'):
    jax.tree.map(np.testing.assert_array_equal, getattr(resumed, part), getattr(straight, part))
