"""The one way a model is applied to faces: preprocessing, eval mode, test-time views."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fer_flax import models
from fer_flax.models import inference


def _model_and_faces():
  model = models.create_model(ml_collections.ConfigDict(
      {'name': 'vgg', 'stages': ((4,), (8,)), 'hidden': (8,), 'dropout_rate': 0.5}))
  faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)), train=False)
  return model, variables, faces


def test_logits_are_the_model_in_eval_mode_on_preprocessed_faces():
  model, variables, faces = _model_and_faces()
  expected = model.apply(variables, faces.astype(np.float32) / 255, train=False)
  np.testing.assert_allclose(inference.logits(model.apply, variables, faces), expected, rtol=1e-6)


def test_probabilities_are_the_softmax_and_flip_averages_a_face_and_its_mirror():
  model, variables, faces = _model_and_faces()
  plain = inference.probabilities(model.apply, variables, faces)
  np.testing.assert_allclose(plain, jax.nn.softmax(inference.logits(model.apply, variables, faces)),
                             rtol=1e-5, atol=1e-7)
  mirrored = inference.probabilities(model.apply, variables, faces[:, :, ::-1])
  flip = inference.probabilities(model.apply, variables, faces, tta='flip')
  np.testing.assert_allclose(flip, (plain + mirrored) / 2, rtol=1e-5, atol=1e-7)
  assert flip.shape == (3, 7)
