"""Training learns, resumes exactly after kill -9, refuses mixed configs, restores for eval."""

import json
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import tiny
from fer_flax import evaluate, fer2013, models, optim, steps, train, workdirs, writers
from fer_flax.errors import UserError
from fer_flax.sharding import Parallel
from tests import conftest


def _best(workdir):
  """The best eval record; among equals, the latest (as orbax ranks them)."""
  return max(_records(workdir, 'public_test'), key=lambda r: (r['accuracy'], r['step']))


def _records(workdir, split):
  return [r for r in writers.read_metrics(pathlib.Path(workdir) / writers.METRICS_FILE)
          if r['split'] == split]


def test_loss_falls_and_the_task_is_learned(finished_run):
  _, workdir, state = finished_run
  losses = [r['loss'] for r in _records(workdir, 'train')]
  assert losses[-1] < 0.5 * losses[0]
  evals = _records(workdir, 'public_test')
  assert [r["step"] for r in evals] == [17, 34, 51, 68, 85]  # one per epoch of 140 // 8 steps
  assert evals[-1]['accuracy'] > 0.8  # chance is 1/7
  assert int(state.step) == 85


def test_workdir_holds_config_checkpoints_and_summaries(finished_run):
  config, workdir, _ = finished_run
  assert json.loads((workdir / 'config.json').read_text())['model']['hidden'] == 16
  assert list(workdir.glob('events.out.tfevents.*'))
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  best = _best(workdir)['step']
  assert steps == sorted({best, *[17 * e for e in range(5 - config.keep_checkpoints + 1, 6)]})


def test_finished_run_rerun_is_a_noop(finished_run, caplog):
  config, workdir, state = finished_run
  before = (workdir / writers.METRICS_FILE).read_text()
  with caplog.at_level('INFO'):
    again = train.train_and_evaluate(config, str(workdir))
  assert 'already finished at step 85' in caplog.text
  assert (workdir / writers.METRICS_FILE).read_text() == before
  jax.tree.map(np.testing.assert_array_equal, again.params, state.params)


def test_different_config_in_same_workdir_is_refused(finished_run):
  config, workdir, _ = finished_run
  changed = config.copy_and_resolve_references()
  changed.optimizer.learning_rate = 0.1
  with pytest.raises(UserError, match=r'holds a run with a different config \(optimizer.'
                                      r'learning_rate: 0.003 -> 0.1\); use a new --workdir'):
    train.train_and_evaluate(changed, str(workdir))


def test_moved_data_may_resume(finished_run, tmp_path):
  config, workdir, _ = finished_run
  moved = config.copy_and_resolve_references()
  moved.data.path = str(tmp_path / 'elsewhere' / 'fer2013.zip')
  pathlib.Path(moved.data.path).parent.mkdir()
  pathlib.Path(moved.data.path).write_bytes(pathlib.Path(config.data.path).read_bytes())
  train.train_and_evaluate(moved, str(workdir))  # Same data, new place: no error.


def test_evaluate_restores_the_best_checkpoint(finished_run, tmp_path):
  _, workdir, _ = finished_run
  result = evaluate.evaluate_checkpoint(str(workdir), 'public_test')
  best = _best(workdir)
  assert result['step'] == best['step'] and result['examples'] == 28
  assert result['accuracy'] == pytest.approx(best['accuracy'])
  assert result['loss'] == pytest.approx(best['loss'], rel=1e-5)
  assert np.sum(result['confusion_matrix']) == 28
  assert [m['support'] for m in result['per_class'].values()] == [4] * 7
  assert evaluate.evaluate_checkpoint(str(workdir), 'train', step=85)['examples'] == 140
  with pytest.raises(UserError, match=r'no checkpoint at step 3 in'):
    evaluate.evaluate_checkpoint(str(workdir), 'public_test', step=3)


def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path, small_archive, tfds_dir):
  # With the random parts of the recipe on: augmentation and its draws, mixup, the moving average.
  overrides = {'data.path': small_archive, 'data.tfds_data_dir': tfds_dir, 'num_epochs': 4,
               'checkpoint_every_steps': 1, 'optimizer.learning_rate': 3e-3,
               'augment.flip': True, 'augment.rotation': 10.0, 'augment.erase_probability': 0.5,
               'augment.mixup_alpha': 0.2, 'ema_decay': 0.9}
  killed = tmp_path / 'killed'
  proc = subprocess.Popen(conftest.main_command(killed, overrides), cwd=conftest.REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  conftest.signal_when(lambda: max(conftest.checkpoint_steps(killed), default=0) >= 5, proc,
                       conftest.KILL, timeout=120)
  proc.wait()
  done = conftest.checkpoint_steps(killed)
  assert 5 <= max(done) < 68, 'the run must be killed mid-way for this test to mean anything'

  config = conftest.tiny_config(small_archive, tfds_dir, **{
      k: v for k, v in overrides.items() if not k.startswith('data.')})
  resumed = train.train_and_evaluate(config, str(killed))
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  for part in ('params', 'opt_state', 'ema'):
    jax.tree.map(np.testing.assert_array_equal, getattr(resumed, part), getattr(straight, part))
  for split in ('train', 'public_test'):
    steps = [r['step'] for r in _records(killed, split)]
    straight_steps = [r['step'] for r in _records(tmp_path / 'straight', split)]
    assert steps == sorted(set(steps)) == straight_steps


def test_cli_errors_are_one_line(tmp_path):
  result = subprocess.run(conftest.main_command(tmp_path / 'w',
                                                {'data.path': tmp_path / 'missing.zip'}),
                          cwd=conftest.REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("fer_flax: error: data path '") and 'missing.zip' in last
  assert '--config.data.path=' in last


@pytest.mark.parametrize('name,overrides', [
    ('adam', {}),
    ('adamw', {'weight_decay': 1e-2}),
    ('sgd', {'momentum': 0.9, 'nesterov': True, 'weight_decay': 1e-4}),
])
def test_optimizers_reduce_a_loss(name, overrides):
  config = conftest.tiny_config('unused', 'unused')
  config.optimizer.name = name
  config.optimizer.learning_rate = 0.1
  config.optimizer.update(overrides)
  tx = optim.create_optimizer(config, optim.create_learning_rate_schedule(config, 10, 100))
  params = {'kernel': jnp.ones((3, 3)), 'bias': jnp.ones(3)}
  loss = lambda p: jnp.sum(p['kernel'] ** 2) + jnp.sum(p['bias'] ** 2)
  opt_state = tx.init(params)
  for _ in range(20):
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    params = optax.apply_updates(params, updates)
  assert loss(params) < 0.5 * 12


def test_weight_decay_spares_biases():
  config = conftest.tiny_config('unused', 'unused')
  config.optimizer.update(name='sgd', momentum=0.0, weight_decay=0.5, learning_rate=1.0)
  tx = optim.create_optimizer(config, optim.create_learning_rate_schedule(config, 1, 1))
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.5)
  np.testing.assert_allclose(updates['bias'], 0.0)


def test_unknown_optimizer_and_schedule():
  config = conftest.tiny_config('unused', 'unused')
  config.optimizer.name = 'lion'
  with pytest.raises(UserError, match=r"unknown optimizer 'lion' in config.optimizer.name"):
    optim.create_optimizer(config, optax.constant_schedule(1.0))
  config.optimizer.schedule = 'step'
  with pytest.raises(UserError, match=r"unknown schedule 'step' in config.optimizer.schedule"):
    optim.create_learning_rate_schedule(config, 10, 100)


def test_warmup_then_cosine():
  config = conftest.tiny_config('unused', 'unused')
  config.optimizer.update(schedule='cosine', warmup_epochs=1.0, learning_rate=1.0)
  schedule = optim.create_learning_rate_schedule(config, steps_per_epoch=10, total_steps=110)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.5)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)


def _one_step(config, batch, model_config=None):
  """(state after one train step from a fixed init, its metrics) under `config`'s recipe."""
  model = models.create_model(model_config or config.model)
  parallel = Parallel(jax.devices()[:1])
  tx = optim.create_optimizer(config, optax.constant_schedule(config.optimizer.learning_rate))
  state = steps.create_train_state(model, tx, jax.random.key(0), parallel,
                                   ema=bool(config.ema_decay))
  init = jax.device_get(state)  # The step donates `state`.
  stacked = {k: v[None] for k, v in batch.items()}
  return init, steps.compile_train_steps(config, parallel)(state, stacked, jax.random.key(1))


def _batch(size=8):
  rng = np.random.default_rng(0)
  return {'image': jnp.asarray(rng.integers(0, 256, (size, 48, 48, 1), dtype=np.uint8)),
          'label': jnp.arange(size, dtype=jnp.int32) % 7}


def test_the_train_step_smooths_the_labels_it_is_told_to():
  config = tiny.get_config()
  config.model.dropout_rate = 0.0  # A deterministic forward pass, to recompute the loss here.
  config.label_smoothing = 0.3
  batch = _batch()
  init, (_, metrics) = _one_step(config, batch)
  logits = init.apply_fn({'params': init.params}, models.preprocess(batch['image']), train=False)
  log_p = jax.nn.log_softmax(logits)
  expected = -(0.7 * jnp.take_along_axis(log_p, batch['label'][:, None], -1)[:, 0]
               + 0.3 * log_p.mean(-1))
  np.testing.assert_allclose(metrics['loss'], expected.sum(), rtol=1e-5)


@pytest.mark.parametrize('field, value', [
    ('flip', True), ('crop_padding', 4), ('rotation', 15.0), ('scale', 0.2), ('shift', 0.1),
    ('blur_probability', 1.0), ('erase_probability', 1.0), ('mixup_alpha', 0.4),
    ('cutmix_alpha', 1.0)])
def test_every_augmentation_reaches_the_train_step(field, value):
  config = tiny.get_config()
  config.model.dropout_rate = 0.0
  batch = _batch()
  _, (plain, plain_metrics) = _one_step(config, batch)
  config.augment[field] = value
  _, (augmented, metrics) = _one_step(config, batch)
  assert float(metrics['loss']) != pytest.approx(float(plain_metrics['loss']), rel=1e-4)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b, rtol=1e-4), plain.params,
                         augmented.params)
  assert any(jax.tree.leaves(changed))


def test_the_moving_average_follows_its_formula_and_evaluation_uses_it():
  config = tiny.get_config()
  config.ema_decay = 0.5
  init, (state, _) = _one_step(config, _batch())
  decay = min(0.5, 2 / 11)  # The warm-up caps the decay at (1 + step) / (10 + step).
  jax.tree.map(lambda e, p0, p1: np.testing.assert_allclose(e, decay * p0 + (1 - decay) * p1,
                                                            rtol=1e-5, atol=1e-7),
               state.ema['params'], init.params, state.params)
  assert state.variables() is state.ema
  config.ema_decay = 0.0
  _, (plain, _) = _one_step(config, _batch())
  assert plain.ema == {} and plain.variables()['params'] is plain.params


def test_training_evaluates_and_keeps_the_moving_average(tmp_path, small_archive, tfds_dir):
  config = conftest.tiny_config(small_archive, tfds_dir, num_epochs=2, ema_decay=0.9)
  workdir = tmp_path / 'run'
  state = train.train_and_evaluate(config, str(workdir))
  recorded = _records(workdir, 'public_test')[-1]
  ema = evaluate.evaluate_model(config, state.ema, 'public_test')
  raw = evaluate.evaluate_model(config, {'params': state.params, 'batch_stats': {}}, 'public_test')
  assert recorded['loss'] == pytest.approx(ema['loss'], rel=1e-4)
  assert recorded['loss'] != pytest.approx(raw['loss'], rel=1e-3)
  result = evaluate.evaluate_checkpoint(str(workdir), 'public_test', step=recorded['step'])
  assert result['loss'] == pytest.approx(ema['loss'], rel=1e-4)


def test_one_cycle_rises_to_the_peak_then_anneals():
  config = tiny.get_config()
  config.optimizer.update(schedule='onecycle', learning_rate=0.1, warmup_epochs=3)
  schedule = optim.create_learning_rate_schedule(config, steps_per_epoch=10, total_steps=100)
  assert float(schedule(0)) == pytest.approx(0.1 / 25)
  assert float(schedule(30)) == pytest.approx(0.1)
  assert float(schedule(15)) < float(schedule(25)) < 0.1
  assert float(schedule(100)) == pytest.approx(0.1 / 25 / 1e4, rel=1e-3)


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'onecycle'])
def test_learning_rate_scales_linearly_with_the_batch_from_its_reference(schedule):
  config = tiny.get_config()
  config.optimizer.update(schedule=schedule, learning_rate=0.1, warmup_epochs=1)

  def peak(batch_size, reference):
    config.update(batch_size=batch_size)
    config.optimizer.reference_batch_size = reference
    schedule = optim.create_learning_rate_schedule(config, 10, 100)
    return max(float(schedule(step)) for step in range(100))

  assert peak(64, 0) == peak(512, 0) == pytest.approx(0.1)
  assert peak(64, 64) == pytest.approx(0.1)
  assert peak(512, 64) == pytest.approx(0.8)
  assert peak(32, 64) == pytest.approx(0.05)


def test_bfloat16_computes_in_bfloat16_on_float32_parameters():
  config = tiny.get_config()
  config.model = ml_collections.ConfigDict(
      {'name': 'vgg', 'stages': ((4,), (8,)), 'hidden': (8,), 'dtype': 'bfloat16'})
  init, (state, metrics) = _one_step(config, _batch())
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype('float32')}
  images = models.preprocess(_batch()['image'])
  logits, inter = init.apply_fn(init.variables(), images, train=False,
                                capture_intermediates=True)
  assert logits.dtype == jnp.float32
  convs = [v for k, v in inter['intermediates'].items() if k.startswith('Conv')]
  assert convs and all(c['__call__'][0].dtype == jnp.bfloat16 for c in convs)
  assert np.isfinite(float(metrics['loss']))
  with pytest.raises(UserError, match='config.model.dtype'):
    models.create_model(ml_collections.ConfigDict({'name': 'vgg', 'dtype': 'int8'}))


def test_a_run_that_failed_before_any_checkpoint_restarts_with_a_fixed_config(
    tmp_path, small_archive, tfds_dir):
  config = conftest.tiny_config(small_archive, tfds_dir, num_epochs=1)
  typo = config.copy_and_resolve_references()
  typo.optimizer.name = 'adma'
  with pytest.raises(UserError, match="unknown optimizer 'adma'"):
    train.train_and_evaluate(typo, str(tmp_path))
  assert int(train.train_and_evaluate(config, str(tmp_path)).step) == 17


def test_evaluate_cli_writes_the_report_and_the_confusion_matrix(finished_run):
  _, workdir, _ = finished_run
  result = subprocess.run([sys.executable, '-m', 'fer_flax.evaluate', f'--workdir={workdir}',
                           '--split=public_test', '--tta=flip'], cwd=conftest.REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  step = _best(workdir)['step']
  report = json.loads((workdir / 'eval' / f'public_test-step{step}-flip.json').read_text())
  assert report['tta'] == 'flip' and report['examples'] == 28
  assert set(report['per_class']) == set(fer2013.EMOTIONS)
  assert (workdir / 'eval' / f'public_test-step{step}-flip.png').stat().st_size > 10_000
  assert 'precision' in result.stdout and 'confusion matrix' in result.stdout


def test_evaluate_cli_scores_an_ensemble_by_its_mean_probability(finished_run, tmp_path):
  from fer_flax import export  # pylint: disable=g-import-not-at-top
  config, workdir, _ = finished_run
  best_step = _best(workdir)['step']
  early_step = min(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                   if p.name.isdigit() and int(p.name) != best_step)
  export.export(str(workdir), tmp_path / 'early', step=early_step)  # A second, other member.
  out = tmp_path / 'ensemble.json'
  result = subprocess.run([sys.executable, '-m', 'fer_flax.evaluate', f'--workdir={workdir}',
                           f'--model={tmp_path / "early"}', '--split=public_test',
                           f'--json={out}'], cwd=conftest.REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(out.read_text())
  best = workdirs.restore_variables(workdir)[1]
  early = export.load(tmp_path / 'early')[1]
  p_best, labels = evaluate.probabilities(config, best, 'public_test')
  p_early, _ = evaluate.probabilities(config, early, 'public_test')
  expected = evaluate.score((p_best + p_early) / 2, labels)
  assert report['accuracy'] == expected['accuracy']
  assert report['loss'] == pytest.approx(expected['loss'], rel=1e-3)
  assert [m['step'] for m in report['members']] == [best_step, early_step]
  assert report['members'][1]['accuracy'] == evaluate.score(p_early, labels)['accuracy']
  assert 'ensemble of 2' in result.stdout


def test_a_batch_norm_model_trains_restores_and_exports(tmp_path, small_archive, tfds_dir):
  from fer_flax import export, predict  # pylint: disable=g-import-not-at-top
  config = conftest.tiny_config(small_archive, tfds_dir, num_epochs=3)
  config.model = ml_collections.ConfigDict(
      {'name': 'compact', 'stem_width': 4, 'widths': (8, 16), 'strides': (2, 2)})
  state = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert jax.tree.leaves(state.batch_stats)
  result = evaluate.evaluate_checkpoint(str(tmp_path / 'run'), 'public_test')
  assert result['accuracy'] == pytest.approx(_best(tmp_path / 'run')['accuracy'])
  export.export(str(tmp_path / 'run'), tmp_path / 'exported')
  shipped = predict.Predictor.pretrained(tmp_path / 'exported', detect=False)
  from_checkpoint = predict.Predictor.from_workdir(str(tmp_path / 'run'), detect=False)
  faces = [conftest.face(label, np.random.default_rng(label)) for label in range(7)]
  np.testing.assert_allclose(shipped.classify(faces), from_checkpoint.classify(faces), atol=5e-3)


def test_a_diverging_run_stops_with_one_line_naming_the_steps_and_keeps_its_good_checkpoints(
    tmp_path, small_archive):
  # The learning rate warms up from 0 over the first epoch to a peak no network survives.
  config = conftest.tiny_config(small_archive, pathlib.Path(''), **{
      'data.pipeline': 'memory', 'data.tfds_data_dir': '', 'checkpoint_every_steps': 1,
      'keep_checkpoints': 100, 'optimizer.name': 'sgd', 'optimizer.learning_rate': 1e8,
      'optimizer.warmup_epochs': 1.0})
  with pytest.raises(train.Diverged) as error:
    train.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  assert '\n' not in message
  assert re.match(r'training diverged: the training loss became NaN or infinite between steps '
                  r'\d+ and \d+, at learning rate .*; its checkpoints up to step \d+ are kept\. '
                  r'Likely cause: too high a learning rate; train in a new --workdir with a '
                  r'lower --config.optimizer.learning_rate', message)
  saved = conftest.checkpoint_steps(tmp_path)
  assert saved and f'up to step {saved[-1]} are kept' in message
  for step in saved:
    variables = workdirs.restore_variables(tmp_path, step)[1]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


def test_each_epoch_trains_at_its_progressive_size(small_archive, tfds_dir, tmp_path, monkeypatch):
  sizes, compile_train_steps = [], steps.compile_train_steps

  def recording(*args):
    train_steps = compile_train_steps(*args)

    def call(state, batches, rng, image_size):
      sizes.extend([image_size] * batches['label'].shape[0])
      return train_steps(state, batches, rng, image_size)
    return call

  monkeypatch.setattr(steps, 'compile_train_steps', recording)
  config = conftest.tiny_config(small_archive, tfds_dir, num_epochs=3,
                                **{'progressive.sizes': (24, 32),
                                   'progressive.fractions': (0.3, 0.3),
                                   'data.pipeline': 'memory'})
  state = train.train_and_evaluate(config, str(tmp_path))
  assert sizes == [24] * 17 + [32] * 17 + [48] * 17 and int(state.step) == 51
  assert len(_records(tmp_path, 'public_test')) == 3  # evaluated at 48x48 after every epoch
