"""Figures: the confusion matrix of an evaluation and the training curves of a run.

  python -m fer_flax.plots --workdir=DIR [--out=FILE.png]

draws the run's training curves from its metrics.jsonl (default: DIR/curves.png).
"""

from __future__ import annotations

import collections
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use('Agg')  # Files only; never a window.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app, flags  # pylint: disable=g-import-not-at-top

from fer_flax import writers  # pylint: disable=g-import-not-at-top
from fer_flax.errors import UserError  # pylint: disable=g-import-not-at-top


def confusion_matrix_png(report: dict[str, Any], path: str | pathlib.Path) -> pathlib.Path:
  """Row-normalised colours with the counts written in the cells; class names on both axes."""
  counts = np.asarray(report['confusion_matrix'])
  normalized = np.asarray(report['confusion_matrix_normalized'])
  names = report['class_names']
  fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=120)
  image = ax.imshow(normalized, cmap='Blues', vmin=0, vmax=1)
  for i in range(len(names)):
    for j in range(len(names)):
      color = 'white' if normalized[i, j] > 0.5 else 'black'
      ax.text(j, i, f'{counts[i, j]}\n{normalized[i, j]:.0%}', ha='center', va='center',
              fontsize=8, color=color)
  ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(f'{report["split"]}, step {report["step"]}, TTA {report["tta"]}: accuracy '
               f'{report["accuracy"]:.1%}, macro F1 {report["macro_f1"]:.3f}', fontsize=10)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='fraction of the true class')
  fig.tight_layout()
  return _save(fig, path)


def curves_png(records: Sequence[dict[str, Any]], path: str | pathlib.Path,
               title: str = '') -> pathlib.Path:
  """Loss and accuracy against step for every split found in a run's metrics."""
  by_split: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
  for r in records:
    by_split[r['split']].append(r)
  if not any('loss' in r for rs in by_split.values() for r in rs):
    raise UserError('the metrics hold no loss or accuracy yet; train for at least one log step')
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
  for ax, metric in zip(axes, ('loss', 'accuracy')):
    for split, rs in sorted(by_split.items()):
      points = [(r['step'], r[metric]) for r in rs if metric in r]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, marker='o' if split != 'train' else None, markersize=3, label=split)
    ax.set_xlabel('step')
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


def _save(fig: Any, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required')
  metrics = pathlib.Path(FLAGS.workdir) / writers.METRICS_FILE
  try:
    if not metrics.exists():
      raise UserError(f'{metrics} does not exist; pass the --workdir of a training run')
    out = curves_png(writers.read_metrics(metrics), FLAGS.out or pathlib.Path(FLAGS.workdir,
                                                                              'curves.png'),
                     title=str(FLAGS.workdir))
  except UserError as e:
    sys.exit(f'fer_flax: error: {e}')
  print(out)


if __name__ == '__main__':
  # Defined here, not at import: evaluate and predict import this module and have flags of their own.
  flags.DEFINE_string('workdir', None, 'A training run; its metrics.jsonl is drawn.')
  flags.DEFINE_string('out', None, 'The PNG to write; default: WORKDIR/curves.png.')
  app.run(main)
