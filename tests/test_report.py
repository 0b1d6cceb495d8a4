"""The classification report: figures by hand, and the table evaluate prints."""

import json

import pytest

from fer_flax.train import report
from tests import helpers

NAMES = helpers.REPORT_NAMES


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


def test_format_report_is_a_readable_table():
  text = report.format_report(helpers.full_report())
  assert 'public_test at step 7: 25 examples, test-time augmentation: flip' in text
  assert 'accuracy 0.8000' in text and 'macro F1' in text and 'balanced accuracy' in text
  row = next(line for line in text.splitlines() if line.startswith('c ') and '0.900' in line)
  assert row.split() == ['c', '0.900', '0.900', '0.900', '10']
