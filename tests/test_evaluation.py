"""The one evaluation path: every example through the compiled step, scored."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_flax.train import evaluation, step_fns


def test_eval_step_with_tta_averages_probabilities():
  """A 'model' that only sees the left half tells a view from its mirror."""
  def apply_fn(variables, x, train):
    left = x[:, :, :24].mean(axis=(1, 2, 3))
    return jnp.stack([left * variables['w'], jnp.zeros_like(left)], axis=-1)

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 48, 48, 1), dtype=np.uint8)
  batch = {'image': images, 'label': np.array([0, 1, 0, 1], np.int32),
           'mask': np.array([True, True, True, False])}
  variables = {'w': jnp.float32(5.0)}
  got = step_fns.eval_step(variables, batch, apply_fn=apply_fn, tta='flip')
  x = images.astype(np.float32) / 255
  probs = [jax.nn.softmax(apply_fn(variables, v, False)) for v in (x, x[:, :, ::-1])]
  mean = (probs[0] + probs[1]) / 2
  np.testing.assert_allclose(got['probabilities'], mean, rtol=1e-5)
  expected_loss = -np.log(np.asarray(mean)[np.arange(3), [0, 1, 0]]).mean()
  mask = np.asarray(got['mask'])
  scored = evaluation.score(np.asarray(got['probabilities'])[mask], np.asarray(got['label'])[mask])
  assert scored['loss'] == pytest.approx(expected_loss, rel=1e-5)
  assert scored['examples'] == 3 and np.sum(scored['confusion_matrix']) == 3
  plain = step_fns.eval_step(variables, batch, apply_fn=apply_fn, tta='none')
  plain_loss = evaluation.score(np.asarray(plain['probabilities'])[mask],
                                batch['label'][mask])['loss']
  assert plain_loss != pytest.approx(expected_loss, rel=1e-3)
