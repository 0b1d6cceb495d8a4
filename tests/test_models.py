"""Models: chosen by name, and seed_cnn is the original network exactly."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from fer_flax import models
from fer_flax.errors import UserError


def _init(model):
  return model.init(jax.random.key(0), jnp.zeros((2, 48, 48, 1)), train=False)['params']


def test_seed_cnn_has_the_original_parameter_count():
  model = models.create_model(ml_collections.ConfigDict({'name': 'seed_cnn'}), num_classes=7)
  params = jax.eval_shape(lambda: _init(model))
  assert sum(x.size for x in jax.tree.leaves(params)) == 9_515_783
  shapes = {k: v['kernel'].shape for k, v in params.items()}
  assert shapes == {'Conv_0': (3, 3, 1, 64), 'Conv_1': (3, 3, 64, 128),
                    'Dense_0': (12 * 12 * 128, 512), 'Dense_1': (512, 7)}


def test_dropout_only_in_training():
  model = models.SeedCNN(features=(4,), hidden=8, dropout_rate=0.5)
  x = jax.random.uniform(jax.random.key(1), (4, 48, 48, 1))
  params = _init(model)
  evals = [model.apply({'params': params}, x, train=False) for _ in range(2)]
  assert jnp.array_equal(*evals)
  trains = [model.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.key(i)})
            for i in range(2)]
  assert not jnp.array_equal(*trains)


def test_unknown_model_name():
  with pytest.raises(UserError, match=r"unknown model 'vgg99' in config.model.name; choose one "
                                      r'of seed_cnn'):
    models.create_model(ml_collections.ConfigDict({'name': 'vgg99'}), 7)


def test_unknown_model_field():
  config = ml_collections.ConfigDict({'name': 'seed_cnn', 'depth': 3})
  with pytest.raises(UserError, match=r"config.model.depth is not a field of model 'seed_cnn'"):
    models.create_model(config, 7)
