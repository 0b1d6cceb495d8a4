"""Each fast layer equals the stock Flax layer it replaces: parameters, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_flax.models import layers


@pytest.mark.parametrize('shape, dtype', [((3, 8, 8, 5), jnp.float32), ((2, 7, 9, 3), jnp.float32),
                                          ((2, 6, 6, 4), jnp.bfloat16)])
def test_max_pool_has_the_values_and_gradients_of_flax_max_pool(shape, dtype):
  weights = jnp.arange(1, 1 + shape[-1], dtype=dtype)  # a distinct cotangent per channel
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  for x in (jax.random.normal(jax.random.key(0), shape, dtype),
            jnp.round(jax.random.uniform(jax.random.key(1), shape, dtype) * 2),  # many ties
            jnp.zeros(shape, dtype)):  # every window tied, as after a dead ReLU
    assert jnp.array_equal(layers.max_pool_2x2(x), flax_pool(x))
    ours, theirs = (jax.grad(lambda x, pool=pool: (pool(x) * weights).sum().astype(jnp.float32))(x)
                    for pool in (layers.max_pool_2x2, flax_pool))
    assert ours.dtype == dtype
    assert jnp.array_equal(ours, theirs)


@pytest.mark.parametrize('in_features, fields', [
    (1, {}), (3, {'padding': 'VALID'}), (8, {'use_bias': False}), (1, {'strides': 2}),
    (4, {'feature_group_count': 4, 'features': 4}), (2, {'kernel_size': (1, 1)})])
def test_conv_has_the_parameters_values_and_gradients_of_flax_conv(in_features, fields):
  fields = {'features': 5, 'kernel_size': (3, 3), **fields}
  x = jax.random.normal(jax.random.key(0), (2, 10, 10, in_features))
  ours, theirs = layers.Conv(**fields), nn.Conv(**fields)
  params = ours.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, params, theirs.init(jax.random.key(1), x))

  def loss(module, params, x):
    y = module.apply(params, x)
    return (y * jnp.arange(y.size).reshape(y.shape) / y.size).sum()

  ours, theirs = (jax.grad(loss, argnums=(1, 2))(module, params, x) for module in (ours, theirs))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ours, theirs)


@pytest.mark.parametrize('shape, dtype', [((4, 6, 6, 5), jnp.float32), ((3, 5, 7, 8), jnp.float32),
                                          ((4, 6, 6, 5), jnp.bfloat16)])
def test_batch_norm_has_the_variables_values_and_gradients_of_flax_batch_norm(shape, dtype):
  x = (3 + 2 * jax.random.normal(jax.random.key(0), shape)).astype(dtype)
  ours, theirs = (module(use_running_average=False, momentum=0.9, dtype=dtype)
                  for module in (layers.BatchNorm, nn.BatchNorm))
  variables = ours.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, variables, theirs.init(jax.random.key(1), x))
  variables = {'params': jax.tree.map(lambda p: p + jnp.linspace(0.5, 1.5, p.size),
                                      variables['params']),
               'batch_stats': variables['batch_stats']}

  def loss(module, params, x):
    y, updates = module.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
    weighted = (y.astype(jnp.float32) * jnp.arange(y.size).reshape(y.shape) / y.size).sum()
    return weighted, (y, updates['batch_stats'])

  ((_, (y, stats)), ours), ((_, (their_y, their_stats)), theirs) = (
      jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)(module, variables['params'], x)
      for module in (ours, theirs))
  assert y.dtype == their_y.dtype == dtype
  tolerance = ({'rtol': 2e-2, 'atol': 2e-2} if dtype == jnp.bfloat16
               else {'rtol': 1e-4, 'atol': 1e-4})
  np.testing.assert_allclose(y.astype(jnp.float32), their_y.astype(jnp.float32), **tolerance)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), stats,
               their_stats)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a.astype(jnp.float32), b.astype(jnp.float32), **tolerance), ours, theirs)
  evaluated = (m(use_running_average=True, dtype=dtype).apply(
                   {**variables, 'batch_stats': stats}, x)
               for m in (layers.BatchNorm, nn.BatchNorm))
  np.testing.assert_allclose(*(e.astype(jnp.float32) for e in evaluated), **tolerance)


def test_sum_over_leading_axes():
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 5))
  np.testing.assert_allclose(layers.sum_over_leading_axes(x), x.sum((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(layers.sum_over_leading_axes(x[:3, :3, :3]),
                             x[:3, :3, :3].sum((0, 1, 2)), rtol=1e-5)


def test_batch_norm_without_a_scale_is_flax_batch_norm_without_one():
  x = 3 + 2 * jax.random.normal(jax.random.key(0), (4, 6, 6, 5))
  ours, theirs = (module(use_running_average=False, use_scale=False)
                  for module in (layers.BatchNorm, nn.BatchNorm))
  variables = ours.init(jax.random.key(1), x)
  assert 'scale' not in variables['params']
  jax.tree.map(np.testing.assert_array_equal, variables, theirs.init(jax.random.key(1), x))
  (y, _), (their_y, _) = (m.apply(variables, x, mutable=['batch_stats']) for m in (ours, theirs))
  np.testing.assert_allclose(y, their_y, rtol=1e-4, atol=1e-4)
