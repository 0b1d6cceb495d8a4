"""Progressive resizing: each size trains its share of the epochs, smaller faces keep what they
show, and a flattening head takes them while staying the same model at 48x48."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from fer_flax import models
from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Parallel
from fer_flax.data import progressive
from fer_flax.train import step_fns


def _config(sizes, fractions, num_epochs=10):
  config = tiny.get_config()
  config.num_epochs = num_epochs
  config.progressive.sizes, config.progressive.fractions = sizes, fractions
  return config


def test_each_size_trains_its_share_of_the_epochs_and_the_rest_is_full_size():
  assert progressive.epoch_sizes(_config((32, 40), (0.25, 0.25))) == [32] * 3 + [40] * 2 + [48] * 5
  assert progressive.epoch_sizes(_config((), ())) == [48] * 10
  assert progressive.epoch_sizes(_config((24,), (0.5,), num_epochs=3)) == [24, 24, 48]


@pytest.mark.parametrize('sizes, fractions, match', [
    ((32, 40), (0.5,), r'sizes \(32, 40\) and .fractions \(0.5,\) differ in length'),
    ((40, 32), (0.2, 0.2), r'sizes \(40, 32\): give image sizes from 16 to 47, smallest first'),
    ((48,), (0.2,), r'sizes \(48,\): give image sizes from 16 to 47'),
    ((8,), (0.2,), r'sizes \(8,\): give image sizes from 16 to 47'),
    ((32, 40), (0.5, 0.5), r'fractions \(0.5, 0.5\): give positive shares of the run that add up '
                           r'to less than 1')])
def test_a_schedule_that_cannot_be_trained_is_refused_naming_the_field(sizes, fractions, match):
  with pytest.raises(UserError, match=r'config.progressive.' + match):
    progressive.epoch_sizes(_config(sizes, fractions))


def test_a_smaller_face_keeps_its_brightness_and_a_flat_one_stays_flat():
  faces = jax.random.uniform(jax.random.key(0), (4, 48, 48, 1))
  small = progressive.resize(faces, 32)
  assert small.shape == (4, 32, 32, 1)
  np.testing.assert_allclose(small.mean((1, 2, 3)), faces.mean((1, 2, 3)), atol=2e-3)
  np.testing.assert_allclose(progressive.resize(jnp.full((1, 48, 48, 1), 0.3), 24), 0.3, rtol=1e-6)
  assert progressive.resize(faces, 48) is faces


def test_a_flattening_head_pools_a_smaller_grid_onto_its_own_as_adaptive_average_pooling():
  x = jnp.arange(2 * 2 * 2, dtype=jnp.float32).reshape(1, 2, 2, 2)
  pooled = models.flatten_grid(x, num_pools=4).reshape(3, 3, 2)  # 48 -> 3x3 after four pools
  row = lambda r: [x[0, r, 0], (x[0, r, 0] + x[0, r, 1]) / 2, x[0, r, 1]]
  middle = [(a + b) / 2 for a, b in zip(row(0), row(1), strict=True)]
  np.testing.assert_allclose(pooled, [row(0), middle, row(1)])
  same = jnp.arange(3 * 3 * 2, dtype=jnp.float32).reshape(1, 3, 3, 2)
  np.testing.assert_array_equal(models.flatten_grid(same, 4), same.reshape(1, -1))


@pytest.mark.parametrize('name, fields', [('vgg', {'stages': ((4,), (8,), (8,), (8,)),
                                                   'hidden': (16,)}),
                                          ('seed_cnn', {'features': (4, 8), 'hidden': 16})])
def test_a_model_made_for_48x48_faces_takes_smaller_ones(name, fields):
  model = models.create_model(ml_collections.ConfigDict({'name': name, **fields}))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)), train=False)
  for size in (16, 32, 40, 48):
    faces = jax.random.uniform(jax.random.key(size), (2, size, size, 1))
    assert model.apply(variables, faces, train=False).shape == (2, 7)


def test_the_train_step_learns_from_the_smaller_faces_it_is_given():
  config = tiny.get_config()
  config.model.dropout_rate = 0.0
  model = models.create_model(config.model)
  parallel = Parallel(jax.devices()[:1])
  train_steps = step_fns.compile_train_steps(config, parallel)
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (1, 8, 48, 48, 1), dtype=np.uint8)),
           'label': jnp.arange(8, dtype=jnp.int32)[None] % 7}
  losses = {}
  for size in (48, 24):
    state, _ = step_fns.initial_state(config, model, lambda _: 1e-3, parallel)
    _, metrics = train_steps(state, batch, jax.random.key(1), size)
    losses[size] = float(metrics['loss'])
  small = progressive.resize(models.preprocess(batch['image'][0]), 24)
  init, _ = step_fns.initial_state(config, model, lambda _: 1e-3, parallel)
  logits = model.apply(init.variables(), small, train=True, mutable=['batch_stats'])[0]
  expected = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch['label'][0][:, None], -1)
  assert losses[24] == pytest.approx(float(expected.sum()), rel=1e-5)
  assert losses[24] != pytest.approx(losses[48], rel=1e-3)
