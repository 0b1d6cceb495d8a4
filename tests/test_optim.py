"""The optimizers and learning-rate schedules `config.optimizer` names."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny
from fer_flax.core.errors import UserError
from fer_flax.train import optim
from fer_flax.train.plan import RunPlan
from tests import helpers


@pytest.mark.parametrize('name,overrides', [
    ('adam', {}),
    ('adamw', {'weight_decay': 1e-2}),
    ('sgd', {'momentum': 0.9, 'nesterov': True, 'weight_decay': 1e-4}),
])
def test_optimizers_reduce_a_loss(name, overrides):
  config = helpers.tiny_config('unused', 'unused')
  config.optimizer.name = name
  config.optimizer.learning_rate = 0.1
  config.optimizer.update(overrides)
  schedule = optim.create_learning_rate_schedule(config, RunPlan.create(config, 10, 10))
  tx = optim.create_optimizer(config, schedule)
  params = {'kernel': jnp.ones((3, 3)), 'bias': jnp.ones(3)}
  loss = lambda p: jnp.sum(p['kernel'] ** 2) + jnp.sum(p['bias'] ** 2)
  opt_state = tx.init(params)
  for _ in range(20):
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    params = optax.apply_updates(params, updates)
  assert loss(params) < 0.5 * 12


def test_weight_decay_spares_biases():
  config = helpers.tiny_config('unused', 'unused')
  config.optimizer.update(name='sgd', momentum=0.0, weight_decay=0.5, learning_rate=1.0)
  schedule = optim.create_learning_rate_schedule(config, RunPlan.create(config, 1, 1))
  tx = optim.create_optimizer(config, schedule)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.5)
  np.testing.assert_allclose(updates['bias'], 0.0)


def test_unknown_optimizer_and_schedule():
  config = helpers.tiny_config('unused', 'unused')
  config.optimizer.name = 'lion'
  with pytest.raises(UserError, match=r"unknown optimizer 'lion' in config.optimizer.name"):
    optim.create_optimizer(config, optax.constant_schedule(1.0))
  config.optimizer.schedule = 'step'
  with pytest.raises(UserError, match=r"unknown schedule 'step' in config.optimizer.schedule"):
    optim.create_learning_rate_schedule(config, RunPlan.create(config, 10, 10))


def test_warmup_then_cosine():
  config = helpers.tiny_config('unused', 'unused')
  config.optimizer.update(schedule='cosine', warmup_epochs=1.0, learning_rate=1.0)
  schedule = optim.create_learning_rate_schedule(config, RunPlan.create(config, 10, 11))
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.5)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)


def test_one_cycle_rises_to_the_peak_then_anneals():
  config = tiny.get_config()
  config.optimizer.update(schedule='onecycle', learning_rate=0.1, warmup_epochs=3)
  schedule = optim.create_learning_rate_schedule(config, RunPlan.create(config, 10, 10))
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
    schedule = optim.create_learning_rate_schedule(config, RunPlan.create(config, 10, 10))
    return max(float(schedule(step)) for step in range(100))

  assert peak(64, 0) == peak(512, 0) == pytest.approx(0.1)
  assert peak(64, 64) == pytest.approx(0.1)
  assert peak(512, 64) == pytest.approx(0.8)
  assert peak(32, 64) == pytest.approx(0.05)


def test_lookahead_on_plain_parameters_is_optax_lookahead():
  fast = optax.sgd(0.1, momentum=0.9)
  ours, theirs = optim.lookahead(fast, 3, 0.5), optax.lookahead(fast, 3, 0.5)
  loss = lambda p: jnp.sum((p['w'] - jnp.arange(3.0)) ** 2 * jnp.array([1.0, 5.0, 20.0]))
  params = {'w': jnp.zeros(3)}
  both = optax.LookaheadParams.init_synced(params)
  state, their_state = ours.init(params), theirs.init(both)
  for _ in range(10):
    updates, state = ours.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
    their_updates, their_state = theirs.update(jax.grad(loss)(both.fast), their_state, both)
    both = optax.apply_updates(both, their_updates)
    np.testing.assert_allclose(params['w'], both.fast['w'], rtol=1e-6)
    np.testing.assert_allclose(state.slow['w'], both.slow['w'], rtol=1e-6)


def test_the_config_wraps_the_optimizer_in_lookahead():
  config = helpers.tiny_config('unused', 'unused', **{'optimizer.lookahead_steps': 5})
  tx = optim.create_optimizer(config, optax.constant_schedule(0.1))
  assert isinstance(tx.init({'w': jnp.ones(2)}), optim.LookaheadState)


# A reference batch of 2 scales the SGD peak, not Muon's; 3 Newton-Schulz steps still orthogonalize.
@pytest.mark.parametrize('reference_batch_size,ns_steps', [(0, 5), (2, 5), (0, 3)])
def test_muon_takes_the_convolution_kernels_and_the_rest_keep_their_optimizer(
    reference_batch_size, ns_steps):
  config = helpers.tiny_config('unused', 'unused', **{
      'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.1, 'optimizer.momentum': 0.9,
      'optimizer.muon_learning_rate': 0.02, 'optimizer.muon_ns_steps': ns_steps,
      'optimizer.reference_batch_size': reference_batch_size})
  rng = np.random.default_rng(0)
  shapes = {'Conv_0': {'kernel': (3, 3, 4, 8), 'bias': (8,)}, 'Dense_0': {'kernel': (8, 7)},
            'PatchWhitening_0': {'kernel': (2, 2, 1, 4)}}
  is_shape = lambda s: isinstance(s, tuple) and all(isinstance(d, int) for d in s)
  params, grads = (jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                                is_leaf=is_shape) for _ in range(2))
  schedule = optax.constant_schedule(optim.peak_learning_rate(config))
  tx, plain = optim.create_optimizer(config, schedule), optim._create_optimizer(
      config.optimizer, schedule)
  updates, _ = tx.update(grads, tx.init(params), params)
  expected, _ = plain.update(grads, plain.init(params), params)
  for layer, name in (('Conv_0', 'bias'), ('Dense_0', 'kernel'), ('PatchWhitening_0', 'kernel')):
    np.testing.assert_allclose(updates[layer][name], expected[layer][name], rtol=1e-6)
  step = updates['Conv_0']['kernel'].reshape(36, 8)  # (height x width x input, output)
  singular = np.linalg.svd(np.asarray(step), compute_uv=False) / 0.02
  assert singular.min() > 0.5 and singular.max() < 1.5  # orthogonalized, at Muon's own rate
  assert jnp.vdot(step, grads['Conv_0']['kernel'].reshape(36, 8)) < 0  # downhill
