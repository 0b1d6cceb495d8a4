"""The figures: confusion matrices, training curves, augmentation grids."""

import numpy as np
import pytest
from PIL import Image

import fer_flax
from fer_flax import plots
from fer_flax.core.errors import UserError
from fer_flax.data import fer2013
from tests import helpers


def test_confusion_matrix_png_colours_rows_by_share_and_writes_counts(tmp_path):
  # Rows [5, 1, 0], [2, 6, 1], [0, 1, 9]: accuracy 20/25; F1 of a, b, c 0.769, 0.706, 0.9.
  report = helpers.full_report()
  figure = plots.confusion_matrix_figure(report)
  ax = figure.axes[0]
  np.testing.assert_array_equal(ax.images[0].get_array(), report['confusion_matrix_normalized'])
  cells = [t.get_text() for t in ax.texts]
  assert cells[:3] == ['5\n83%', '1\n17%', '0\n0%'] and cells[-1] == '9\n90%'
  assert [t.get_text() for t in ax.get_xticklabels()] == list(helpers.REPORT_NAMES)
  assert ax.get_title() == 'public_test, step 7, TTA flip: accuracy 80.0%, macro F1 0.792'
  path = plots.confusion_matrix_png(report, tmp_path / 'eval' / 'cm.png')
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


def test_augment_grid_png_shows_each_face_and_its_draws(tmp_path):
  from configs import cpu  # pylint: disable=g-import-not-at-top
  faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
  with Image.open(plots.augment_grid_png(faces, cpu.get_config(), tmp_path / 'a.png',
                                         views=4)) as image:
    assert image.size[0] > image.size[1] > 200


def test_prediction_grid_png(packed_run, small_archive, tmp_path):
  from fer_flax import plots  # pylint: disable=g-import-not-at-top
  packed_predictor = fer_flax.Predictor.pretrained(packed_run, detect=False)
  path = plots.prediction_grid_png(packed_predictor, fer2013.Source(small_archive), 'public_test',
                                   tmp_path / 'grid.png', per_class=2)
  with Image.open(path) as image:
    assert image.format == 'PNG' and image.size[0] > 800
  with pytest.raises(UserError, match=r"split 'private_test' is not in"):
    plots.prediction_grid_png(packed_predictor, fer2013.Source(small_archive), 'private_test',
                              tmp_path / 'x.png')
