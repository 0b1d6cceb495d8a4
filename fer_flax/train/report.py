"""Classification report from a confusion matrix: what a researcher reads after evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den, with 0 where den is 0 (a class never predicted, or absent from the split)."""
  return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def classification_report(confusion: Sequence[Sequence[int]],
                          class_names: Sequence[str]) -> dict[str, Any]:
  """Per-class precision, recall, F1 and support; macro-F1; balanced accuracy; both matrices.

  `confusion[i][j]` counts examples of true class i predicted as class j.
  """
  cm = np.asarray(confusion, dtype=float)
  true_positives = np.diag(cm)
  support = cm.sum(axis=1)
  precision = _ratio(true_positives, cm.sum(axis=0))
  recall = _ratio(true_positives, support)
  f1 = _ratio(2 * precision * recall, precision + recall)
  present = support > 0
  return {
      'accuracy': float(true_positives.sum() / max(cm.sum(), 1)),
      'balanced_accuracy': float(recall[present].mean()) if present.any() else 0.0,
      'macro_f1': float(f1[present].mean()) if present.any() else 0.0,
      'per_class': {name: {'precision': float(p), 'recall': float(r), 'f1': float(f),
                           'support': int(s)}
                    for name, p, r, f, s in zip(class_names, precision, recall, f1, support,
                                                strict=True)},
      'class_names': list(class_names),
      'confusion_matrix': cm.astype(int).tolist(),
      'confusion_matrix_normalized': _ratio(cm, support[:, None]).round(4).tolist(),
  }


def format_report(report: dict[str, Any]) -> str:
  """The report as a table a person reads at a glance."""
  members = report.get('members', [])
  what = f'ensemble of {len(members)}' if members else f'at step {report["step"]}'
  header = (f'{report["split"]} {what}: {report["examples"]} examples, '
            f'test-time augmentation: {report["tta"]}')
  lines = [header, '']
  for m in members:
    lines.append(f'  member {m["source"]} ({m["model"]}, step {m["step"]}): accuracy '
                 f'{m["accuracy"]:.4f}, loss {m["loss"]:.4f}')
  if members:
    lines.append('')
  lines.append(f'{"":10s} {"precision":>9s} {"recall":>7s} {"f1":>6s} {"support":>8s}')
  for name, m in report['per_class'].items():
    lines.append(f'{name:10s} {m["precision"]:9.3f} {m["recall"]:7.3f} {m["f1"]:6.3f} '
                 f'{m["support"]:8d}')
  lines += ['', f'accuracy {report["accuracy"]:.4f}   balanced accuracy '
            f'{report["balanced_accuracy"]:.4f}   macro F1 {report["macro_f1"]:.4f}   '
            f'loss {report["loss"]:.4f}']
  names = report['class_names']
  lines += ['', 'confusion matrix (rows: true, columns: predicted)',
            f'{"":10s}' + ''.join(f'{n[:7]:>8s}' for n in names)]
  for name, row in zip(names, report['confusion_matrix'], strict=True):
    lines.append(f'{name:10s}' + ''.join(f'{v:8d}' for v in row))
  return '\n'.join(lines)
