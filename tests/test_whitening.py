"""The patch-whitening layer whitens the patches it was fitted to, and stays frozen in training."""

import jax
import jax.numpy as jnp
import numpy as np

from fer_flax.models import whitening
from fer_flax.train import optim


def _faces(n=64, seed=0):
  """Smooth, correlated images in [0, 1], as faces are."""
  noise = jax.random.uniform(jax.random.key(seed), (n, 50, 50, 1))
  return (noise[:, :-2, :-2] + noise[:, 1:-1, 1:-1] + noise[:, 2:, 2:]) / 3


def test_the_kernel_whitens_the_patches_it_was_fitted_to():
  images = _faces()
  kernel = whitening.whitening_kernel(images, 2, eps=0.0)
  assert kernel.shape == (2, 2, 1, 8)
  np.testing.assert_array_equal(kernel[..., 4:], -kernel[..., :4])  # each filter and its negative
  layer = whitening.PatchWhitening(2)
  params = {'params': {'kernel': kernel, 'bias': jnp.zeros(8)}}
  out = layer.apply(params, images)[:, :-1, :-1, :4].reshape(-1, 4)  # inside the image
  np.testing.assert_allclose(out.T @ out / len(out), np.eye(4), atol=1e-3)


def test_the_kernel_gets_no_gradient_and_no_weight_decay():
  images = _faces(4)
  layer = whitening.PatchWhitening(2)
  params = layer.init(jax.random.key(0), images)['params']
  assert not np.any(params['kernel'])  # set from data before training, not at random
  params = {**params, 'kernel': whitening.whitening_kernel(images, 2)}
  grads = jax.grad(lambda p: jnp.sum(layer.apply({'params': p}, images) ** 2))(params)
  assert not np.any(grads['kernel']) and np.any(grads['bias'])
  tree = {'PatchWhitening_0': params, 'Conv_0': {'kernel': jnp.ones((3, 3, 8, 4))}}
  assert optim.decay_mask(tree) == {'PatchWhitening_0': {'kernel': False, 'bias': False},
                                    'Conv_0': {'kernel': True}}
  replaced = whitening.with_kernel(tree, jnp.zeros((2, 2, 1, 8)))
  assert not np.any(replaced['PatchWhitening_0']['kernel'])
  np.testing.assert_array_equal(replaced['Conv_0']['kernel'], tree['Conv_0']['kernel'])
