"""The compiled train step: label smoothing, every augmentation, the moving average, bfloat16."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import tiny
from fer_flax import models
from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Parallel
from fer_flax.train import optim, step_fns


def _one_step(config, batch, model_config=None):
  """(state after one train step from a fixed init, its metrics) under `config`'s recipe."""
  model = models.create_model(model_config or config.model)
  parallel = Parallel(jax.devices()[:1])
  tx = optim.create_optimizer(config, optax.constant_schedule(config.optimizer.learning_rate))
  state = step_fns.create_train_state(model, tx, jax.random.key(0), parallel,
                                   ema=bool(config.ema_decay))
  init = jax.device_get(state)  # The step donates `state`.
  stacked = {k: v[None] for k, v in batch.items()}
  return init, step_fns.compile_train_steps(config, parallel)(state, stacked, jax.random.key(1))


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
