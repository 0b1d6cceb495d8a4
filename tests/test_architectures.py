"""Models: chosen by name, and seed_cnn is the original network exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fer_flax import models
from fer_flax.core.errors import UserError
from fer_flax.models import architectures


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
                                      r'of compact, resnet18, resnet34, seed_cnn, vgg'):
    models.create_model(ml_collections.ConfigDict({'name': 'vgg99'}), 7)


def test_unknown_model_field():
  config = ml_collections.ConfigDict({'name': 'seed_cnn', 'depth': 3})
  with pytest.raises(UserError, match=r"config.model.depth is not a field of model 'seed_cnn'"):
    models.create_model(config, 7)


SMALL = {
    'vgg': {'stages': ((4,), (8, 8)), 'hidden': (16,)},
    'resnet18': {'widths': (4, 8, 8, 16)},
    'resnet34': {'widths': (4, 4, 8, 8)},
    'compact': {'stem_width': 4, 'widths': (8, 8, 16), 'strides': (1, 2, 2)},
}


@pytest.mark.parametrize('name', sorted(SMALL))
def test_zoo_models_on_small_shapes(name):
  model = models.create_model(ml_collections.ConfigDict({'name': name, **SMALL[name]}), 7)
  x = jax.random.uniform(jax.random.key(0), (4, 48, 48, 1))
  variables = model.init(jax.random.key(1), x, train=False)
  assert set(variables) == {'params', 'batch_stats'}
  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'],
                                rngs={'dropout': jax.random.key(2)})
  assert logits.shape == (4, 7) and jnp.all(jnp.isfinite(logits))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables['batch_stats'],
                         updates['batch_stats'])
  assert any(jax.tree.leaves(changed))  # training updates the running statistics
  assert model.apply(variables, x, train=False).shape == (4, 7)


# torchvision's ImageNet ResNets (11,689,512 and 21,797,672 parameters) with a 3x3 grayscale stem
# (576 for 9,408) and 7 classes (3,591 for 513,000); SeedCNN by hand: 640 + 73,856 + 9,437,696
# + 3,591.
@pytest.mark.parametrize('name,count', [
    ('seed_cnn', 9_515_783), ('resnet18', 11_689_512 - 9_408 + 576 - 513_000 + 3_591),
    ('resnet34', 21_797_672 - 9_408 + 576 - 513_000 + 3_591), ('compact', 273_159)])
def test_zoo_parameter_counts(name, count):
  model = models.create_model(ml_collections.ConfigDict({'name': name}), 7)
  params = jax.eval_shape(lambda: _init(model))
  assert models.count_parameters(params) == count


def test_describe_counts_parameters_and_flops():
  params, flops = models.describe(models.SeedCNN())
  assert params == 9_515_783
  # Multiply-adds of the two convolutions and two dense layers, two FLOPs each.
  macs = 48 * 48 * 9 * 64 + 24 * 24 * 9 * 64 * 128 + 12 * 12 * 128 * 512 + 512 * 7
  assert 0.9 * 2 * macs < flops < 1.1 * 2 * macs


class _PlainSeedCNN(nn.Module):
  """seed_cnn written with stock Flax layers, as the original project had it."""

  @nn.compact
  def __call__(self, x, *, train):
    for width in (8, 16):
      x = nn.max_pool(nn.relu(nn.Conv(width, (3, 3), padding='SAME')(x)), (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(32)(x.reshape((x.shape[0], -1))))
    return nn.Dense(7)(nn.Dropout(0.5, deterministic=not train)(x))


def test_seed_cnn_trains_as_the_plain_flax_network():
  ours = models.SeedCNN(features=(8, 16), hidden=32)
  x = jnp.round(jax.random.uniform(jax.random.key(0), (4, 48, 48, 1)) * 4) / 4  # ties in pools
  params = _init(ours)
  jax.tree.map(np.testing.assert_array_equal, params, _PlainSeedCNN().init(
      jax.random.key(0), jnp.zeros((2, 48, 48, 1)), train=False)['params'])

  def loss(module, params):
    logits = module.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.key(2)})
    return jax.nn.log_softmax(logits)[:, 3].mean()

  (ours, grads), (theirs, plain_grads) = (jax.value_and_grad(loss, argnums=1)(m, params)
                                          for m in (ours, _PlainSeedCNN()))
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads, plain_grads)


def test_dirac_init_starts_each_convolution_as_the_identity():
  init = architectures.dirac_init()
  kernel = init(jax.random.key(0), (3, 3, 4, 6))
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 4))
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(y[..., :4], x, atol=1e-6)  # the first four pass their input on
  assert np.std(kernel[..., 4:]) > 0  # the rest start at random, as before


def test_vgg_takes_the_fast_training_options():
  model = architectures.VGG(stages=((4,), (8,)), hidden=(16,), whiten=2, dirac_init=True,
                            norm_scale=False, head_norm=True)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)), train=False)
  params = variables['params']
  assert params['PatchWhitening_0']['kernel'].shape == (2, 2, 1, 8)
  assert params['Conv_0']['kernel'].shape == (3, 3, 8, 4)  # takes the eight whitened channels
  assert 'scale' not in params['BatchNorm_0']
  np.testing.assert_array_equal(params['Conv_1']['kernel'][1, 1, :4, :4], np.eye(4))
  assert 'bias' not in params['Dense_0'] and params['DenseNorm_0']['bias'].shape == (16,)
