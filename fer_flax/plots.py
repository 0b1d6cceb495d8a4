"""Figures: confusion matrices, training curves, and grids of example predictions.

  python -m fer_flax.plots curves --workdir=DIR [--out=FILE.png]
  python -m fer_flax.plots time --workdir=DIR[,DIR2,...] [--accuracy=0.72] [--out=FILE.png]
  python -m fer_flax.plots grid (--model=pretrained | --workdir=DIR) --data=PATH
      [--split=public_test] [--per_class=3] [--out=FILE.png]
  python -m fer_flax.plots augment --config=configs/cpu.py --data=PATH [--out=FILE.png]

`curves` draws a run's loss and accuracy from its metrics.jsonl (default: DIR/curves.png); `time`
draws evaluation accuracy against seconds of training for one or more runs; `grid`
classifies a few faces of each class of a split and shows them with true and predicted labels;
`augment` shows training faces as a config's augmentation (mixup/CutMix included) presents them.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use('Agg')  # Files only; never a window.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app, flags  # pylint: disable=g-import-not-at-top
from etils import epath  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

from fer_flax.core import cli
from fer_flax.core.errors import UserError, exits_on_user_error  # pylint: disable=g-import-not-at-top
from fer_flax.data import fer2013
from fer_flax.train import writers  # pylint: disable=g-import-not-at-top


def confusion_matrix_figure(report: dict[str, Any]) -> Any:
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
  what = (f'ensemble of {len(report["members"])}' if 'members' in report
          else f'step {report["step"]}')
  ax.set_title(f'{report["split"]}, {what}, TTA {report["tta"]}: accuracy '
               f'{report["accuracy"]:.1%}, macro F1 {report["macro_f1"]:.3f}', fontsize=10)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='fraction of the true class')
  fig.tight_layout()
  return fig


def confusion_matrix_png(report: dict[str, Any], path: epath.PathLike) -> epath.Path:
  """`confusion_matrix_figure` as a PNG at `path`."""
  return _save(confusion_matrix_figure(report), path)


def curves_png(records: Sequence[dict[str, Any]], path: epath.PathLike,
               title: str = '') -> epath.Path:
  """Loss and accuracy against step for every split found in a run's metrics."""
  by_split: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
  for r in records:
    by_split[r['split']].append(r)
  if not any('loss' in r for rs in by_split.values() for r in rs):
    raise UserError('the metrics hold no loss or accuracy yet; train for at least one log step')
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
  for ax, metric in zip(axes, ('loss', 'accuracy'), strict=True):
    for split, rs in sorted(by_split.items()):
      points = [(r['step'], r[metric]) for r in rs if metric in r]
      if points:
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker='o' if split != 'train' else None, markersize=3, label=split)
    ax.set_xlabel('step')
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


def time_png(runs: dict[str, Sequence[dict[str, Any]]], path: epath.PathLike,
             target: float | None = None, split: str = 'public_test') -> epath.Path:
  """Evaluation accuracy against seconds of training (compiling left out), one line a run."""
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  for name, records in runs.items():
    points = [(r['train_seconds'], r['accuracy']) for r in records
              if r.get('split') == split and 'train_seconds' in r]
    if not points:
      raise UserError(f'{name} has no timed {split} evaluation; train it with this version')
    ax.plot(*zip(*points, strict=True), marker='o', markersize=3, label=name)
  if target:
    ax.axhline(target, color='gray', linestyle='--', linewidth=1, label=f'target {target:.0%}')
  ax.set_xlabel('seconds of training (compiling left out)')
  ax.set_ylabel(f'{split} accuracy')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def prediction_grid_png(predictor: Any, source: Any, split: str, path: epath.PathLike,
                        per_class: int = 3, seed: int = 0) -> epath.Path:
  """`per_class` random faces of each class of `split`, titled true -> predicted (confidence)."""
  records = [r for r in source.records if r.split == split]
  if not records:
    raise UserError(f'split {split!r} is not in {source.path} (it has '
                    f'{", ".join(source.split_sizes())}); pass one of those with --split')
  rng = np.random.default_rng(seed)
  names = fer2013.EMOTIONS
  chosen = []
  for label in range(len(names)):
    of_class = [r for r in records if r.label == label]
    chosen += [of_class[i] for i in sorted(rng.choice(len(of_class), min(per_class, len(of_class)),
                                                      replace=False))]
  keys = {r.key for r in chosen}
  images = {r.key: img for r, img in source.examples(split) if r.key in keys}
  probabilities = predictor.classify([images[r.key] for r in chosen])
  fig, axes = plt.subplots(per_class, len(names), figsize=(1.6 * len(names), 2.1 * per_class),
                           dpi=120, squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for i, (record, p) in enumerate(zip(chosen, probabilities, strict=True)):
    ax = axes[i % per_class, record.label]
    predicted = int(np.argmax(p))
    ax.imshow(images[record.key], cmap='gray', vmin=0, vmax=255)
    ax.set_title(f'{names[record.label]}\n-> {names[predicted]} {p[predicted]:.0%}', fontsize=8,
                 color='green' if predicted == record.label else 'red')
  fig.suptitle(f'{split}: true label -> prediction (green: right, red: wrong)', fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def augment_grid_png(images: np.ndarray, config: Any, path: epath.PathLike, views: int = 6,
                     seed: int = 0) -> epath.Path:
  """Each uint8 face of `images`, then `views` draws of the train step's augmentation of it."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from fer_flax import models
  from fer_flax.data import augment  # pylint: disable=g-import-not-at-top
  faces = models.preprocess(jnp.asarray(images))
  rows = []
  for view in range(views):
    augment_rng, mix_rng = jax.random.split(jax.random.fold_in(jax.random.key(seed), view))
    augmented = augment.augment_images(faces, augment_rng, config.augment)
    targets = jnp.eye(len(faces))
    rows.append(np.asarray(augment.mix(augmented, targets, mix_rng, config.augment)[0]))
  fig, axes = plt.subplots(len(faces), views + 1, figsize=(1.2 * (views + 1), 1.25 * len(faces)),
                           dpi=120, squeeze=False)
  for i, face in enumerate(np.asarray(faces)):
    for j, image in enumerate([face] + [r[i] for r in rows]):
      axes[i, j].imshow(image[..., 0], cmap='gray', vmin=0, vmax=1)
      axes[i, j].axis('off')
  axes[0, 0].set_title('original', fontsize=8)
  for j in range(1, views + 1):
    axes[0, j].set_title(f'draw {j}', fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def _save(fig: Any, path: epath.PathLike) -> epath.Path:
  """Saves a PNG to any file system epath knows (a gs:// workdir's eval/ too)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    fig.savefig(f, format='png')
  plt.close(fig)
  return path


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_multi_string('workdir', None, 'Training runs (repeated or comma-separated): '
                            'their metrics (time), or one run\'s metrics (curves) or best '
                            'checkpoint (grid).')
  flags.DEFINE_integer('step', None, 'grid, with --workdir: the checkpoint step; default: the '
                       'best.')
  flags.DEFINE_string('model', None, 'grid: "pretrained", or a folder written by fer_flax.export.')
  flags.DEFINE_string('data', None, 'grid: FER2013 archive, folder or CSV.')
  flags.DEFINE_string('split', 'public_test', 'grid: the split whose faces are shown; time: the '
                      'evaluated split.')
  flags.DEFINE_float('accuracy', None, 'time: a target accuracy to draw.')
  flags.DEFINE_integer('per_class', 3, 'grid: faces per class.')
  flags.DEFINE_string('out', None, 'The PNG to write; default: WORKDIR/curves.png, grid.png or '
                      'augment.png.')
  config_flags.DEFINE_config_file('config', None, 'augment: the training config to illustrate.')


def _one_workdir(command: str) -> str | None:
  workdirs = cli.split_list(FLAGS.workdir)
  if len(workdirs) > 1:
    raise app.UsageError(f'{command} takes one --workdir')
  return workdirs[0] if workdirs else None


def _curves() -> epath.Path:
  workdir = _one_workdir('curves')
  if not workdir:
    raise app.UsageError('curves needs --workdir')
  out = FLAGS.out or epath.Path(workdir) / 'curves.png'
  return curves_png(writers.read_run_metrics(workdir), out, title=workdir)


def _time() -> epath.Path:
  if not FLAGS.workdir:
    raise app.UsageError('time needs --workdir')
  runs = {workdir: writers.read_run_metrics(workdir) for workdir in cli.split_list(FLAGS.workdir)}
  return time_png(runs, FLAGS.out or 'time_to_accuracy.png', FLAGS.accuracy, FLAGS.split)


def _grid() -> epath.Path:
  from fer_flax.serve import loading  # pylint: disable=g-import-not-at-top
  from fer_flax.serve.predictor import Predictor  # pylint: disable=g-import-not-at-top
  if not FLAGS.data:
    raise app.UsageError('grid needs --data')
  workdir = _one_workdir('grid')
  predictor = Predictor.from_loaded(loading.load_model(FLAGS.model, workdir, FLAGS.step),
                                    detect=False, tta='none')  # evaluate's single view
  return prediction_grid_png(predictor, fer2013.Source(FLAGS.data), FLAGS.split,
                             FLAGS.out or 'grid.png', per_class=FLAGS.per_class)


def _augment() -> epath.Path:
  if FLAGS.config is None or not FLAGS.data:
    raise app.UsageError('augment needs --config and --data')
  source = fer2013.Source(FLAGS.data)
  faces = []
  for _, image in source.examples('train'):
    faces.append(image)
    if len(faces) == 6:
      break
  return augment_grid_png(np.stack(faces)[..., None], FLAGS.config, FLAGS.out or 'augment.png')


@exits_on_user_error
def main(argv: list[str]) -> None:
  commands = {'curves': _curves, 'time': _time, 'grid': _grid, 'augment': _augment}
  if len(argv) != 2 or argv[1] not in commands:
    raise app.UsageError('usage: python -m fer_flax.plots curves|time|grid|augment [flags]')
  print(commands[argv[1]]())


def run() -> None:
  """`fer-flax-plots`, `python -m fer_flax.plots`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
