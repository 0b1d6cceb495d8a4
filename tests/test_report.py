"""The evaluation report, test-time augmentation, and the figures drawn from them."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fer_flax import augment, evaluate, plots, report, steps
from fer_flax.errors import UserError

NAMES = ('a', 'b', 'c')


def test_classification_report_by_hand():
  # rows: true a, b, c; columns: predicted.
  cm = [[8, 2, 0],
        [1, 3, 0],
        [0, 0, 0]]  # class c never occurs: it must not drag down the macro averages
  r = report.classification_report(cm, NAMES)
  assert r['accuracy'] == pytest.approx(11 / 14)
  assert r['per_class']['a'] == pytest.approx(
      {'precision': 8 / 9, 'recall': 0.8, 'f1': 2 * (8 / 9) * 0.8 / (8 / 9 + 0.8), 'support': 10})
  assert r['per_class']['b']['precision'] == pytest.approx(0.6)
  assert r['per_class']['c'] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 0}
  assert r['balanced_accuracy'] == pytest.approx((0.8 + 0.75) / 2)
  assert r['macro_f1'] == pytest.approx((r['per_class']['a']['f1'] + r['per_class']['b']['f1']) / 2)
  assert r['confusion_matrix_normalized'][0] == [0.8, 0.2, 0.0]
  assert r['confusion_matrix_normalized'][2] == [0.0, 0.0, 0.0]
  json.dumps(r)  # the report is plain JSON


def _full_report():
  r = report.classification_report([[5, 1, 0], [2, 6, 1], [0, 1, 9]], NAMES)
  return {'split': 'public_test', 'step': 7, 'tta': 'flip', 'examples': 25, 'loss': 0.5, **r}


def test_format_report_is_a_readable_table():
  text = report.format_report(_full_report())
  assert 'public_test at step 7: 25 examples, test-time augmentation: flip' in text
  assert 'accuracy 0.8000' in text and 'macro F1' in text and 'balanced accuracy' in text
  row = next(line for line in text.splitlines() if line.startswith('c ') and '0.900' in line)
  assert row.split() == ['c', '0.900', '0.900', '0.900', '10']


def test_confusion_matrix_png(tmp_path):
  path = plots.confusion_matrix_png(_full_report(), tmp_path / 'eval' / 'cm.png')
  with Image.open(path) as image:
    assert image.format == 'PNG' and image.size[0] > 500


def test_curves_png(tmp_path):
  records = [{'step': s, 'split': 'train', 'loss': 2 - s / 10, 'accuracy': s / 10}
             for s in range(1, 6)] + [{'step': 5, 'split': 'public_test', 'loss': 1.6,
                                       'accuracy': 0.4}]
  with Image.open(plots.curves_png(records, tmp_path / 'c.png')) as image:
    assert image.format == 'PNG'
  with pytest.raises(UserError, match='no loss or accuracy'):
    plots.curves_png([], tmp_path / 'empty.png')


def test_tta_views():
  images = jnp.arange(2 * 48 * 48, dtype=jnp.float32).reshape(2, 48, 48, 1)
  assert augment.tta_views(images, 'none').shape == (1, 2, 48, 48, 1)
  flip = augment.tta_views(images, 'flip')
  np.testing.assert_array_equal(flip[1], images[:, :, ::-1])
  ten = augment.tta_views(images, 'tencrop', shift=4)
  assert ten.shape == (10, 2, 48, 48, 1)
  np.testing.assert_array_equal(ten[4], images)  # the centre crop is the image itself
  np.testing.assert_array_equal(ten[9], images[:, :, ::-1])
  np.testing.assert_array_equal(ten[0][:, 4:, 4:], images[:, :-4, :-4])  # shifted by 4 pixels
  with pytest.raises(UserError, match="unknown test-time augmentation 'rotate'"):
    augment.tta_views(images, 'rotate')


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
  got = steps.eval_step(variables, batch, apply_fn=apply_fn, tta='flip')
  x = images.astype(np.float32) / 255
  probs = [jax.nn.softmax(apply_fn(variables, v, False)) for v in (x, x[:, :, ::-1])]
  mean = (probs[0] + probs[1]) / 2
  np.testing.assert_allclose(got['probabilities'], mean, rtol=1e-5)
  expected_loss = -np.log(np.asarray(mean)[np.arange(3), [0, 1, 0]]).mean()
  mask = np.asarray(got['mask'])
  scored = evaluate.score(np.asarray(got['probabilities'])[mask], np.asarray(got['label'])[mask])
  assert scored['loss'] == pytest.approx(expected_loss, rel=1e-5)
  assert scored['examples'] == 3 and np.sum(scored['confusion_matrix']) == 3
  plain = steps.eval_step(variables, batch, apply_fn=apply_fn, tta='none')
  plain_loss = evaluate.score(np.asarray(plain['probabilities'])[mask], batch['label'][mask])['loss']
  assert plain_loss != pytest.approx(expected_loss, rel=1e-3)


def test_augment_grid_png_shows_each_face_and_its_draws(tmp_path):
  from configs import cpu  # pylint: disable=g-import-not-at-top
  faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
  with Image.open(plots.augment_grid_png(faces, cpu.get_config(), tmp_path / 'a.png',
                                         views=4)) as image:
    assert image.size[0] > image.size[1] > 200
