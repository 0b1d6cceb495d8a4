"""Scores trained models, or their ensemble, on a FER2013 split and writes a report.

  python -m fer_flax.evaluate --workdir=DIR --split=private_test [--data=PATH] [--step=N]
      [--tta=none|flip|tencrop] [--json=FILE]
  python -m fer_flax.evaluate --model=pretrained --split=public_test --data=PATH
  python -m fer_flax.evaluate --workdir=RUN1,RUN2,RUN3 --tta=flip   # an ensemble

Restores the best checkpoint of each workdir (by the eval accuracy recorded during training) or
--step, with the config saved in the workdir. Several workdirs or models form an ensemble that
averages their probabilities. Prints a table and writes, into the (first) WORKDIR/eval/, the JSON
report (accuracy, loss, per-class precision/recall/F1/support, macro-F1, balanced accuracy,
confusion matrices) and a confusion-matrix PNG.
"""

import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath

from fer_flax import augment, checkpoints, export, fer2013, input_pipeline, models, plots, report
from fer_flax import tfds_builder, train
from fer_flax.errors import UserError

FLAGS = flags.FLAGS


def probabilities(config: ml_collections.ConfigDict, variables: dict[str, Any], split: str,
                  data: str | None = None, tfds_data_dir: str | None = None,
                  tta: str = 'none') -> tuple[np.ndarray, np.ndarray]:
  """([N, classes] probabilities, [N] labels) of model variables trained with `config`."""
  parallel = train.Parallel()
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  if tfds_data_dir is None:
    tfds_data_dir = config.data.tfds_data_dir
  builder = tfds_builder.prepare(data or config.data.path, tfds_data_dir)
  eval_ds, _ = input_pipeline.eval_data(builder, split, config.eval_batch_size,
                                        jax.process_index(), jax.process_count())
  model = models.create_model(config.model, num_classes=len(fer2013.EMOTIONS))
  variables = jax.device_put(variables, parallel.replicated)
  step = parallel.jit_predict_step(model.apply, tta)
  outputs = jax.device_get([step(variables, parallel.to_global(batch))
                            for batch in eval_ds.as_numpy_iterator()])
  joined = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  mask = joined['mask'].astype(bool)
  return joined['probabilities'][mask], joined['label'][mask]


def score(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """Loss (mean negative log-likelihood) and the classification report of probabilities."""
  num_classes = len(fer2013.EMOTIONS)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, probs.argmax(-1)), 1)
  picked = probs[np.arange(len(labels)), labels]
  loss = float(-np.log(np.maximum(picked, np.finfo(np.float32).tiny)).mean())
  return {'examples': int(len(labels)), 'loss': loss,
          **report.classification_report(confusion, fer2013.EMOTIONS)}


def evaluate_model(config: ml_collections.ConfigDict, variables: dict[str, Any], split: str,
                   data: str | None = None, tfds_data_dir: str | None = None,
                   tta: str = 'none') -> dict[str, Any]:
  """Scores model variables trained with `config` on `split`; returns the full report."""
  probs, labels = probabilities(config, variables, split, data, tfds_data_dir, tta)
  return {'split': split, 'tta': tta, **score(probs, labels)}


def evaluate_checkpoint(workdir: str, split: str, data: str | None = None,
                        tfds_data_dir: str | None = None, step: int | None = None,
                        tta: str = 'none') -> dict[str, Any]:
  """Restores the best checkpoint of `workdir` (or `step`) and scores it on `split`."""
  config, variables, step = checkpoints.restore_variables(workdir, step)
  return {'step': step, **evaluate_model(config, variables, split, data, tfds_data_dir, tta)}


def evaluate_exported(directory: str | pathlib.Path, split: str, data: str | None = None,
                      tfds_data_dir: str | None = None, tta: str = 'none') -> dict[str, Any]:
  """Scores an exported model (the shipped one, by default) on `split`."""
  config, variables, info = export.load(directory)
  return {'step': info['step'], 'model': str(directory),
          **evaluate_model(config, variables, split, data, tfds_data_dir, tta)}


def evaluate_ensemble(workdirs: Sequence[str], exported: Sequence[str | pathlib.Path],
                      split: str, data: str | None = None, tfds_data_dir: str | None = None,
                      tta: str = 'none') -> dict[str, Any]:
  """Scores the ensemble of runs' best checkpoints and exported models: their mean probability.

  Each member is also scored alone, so the report shows what the ensemble adds.
  """
  members = [(workdir, *checkpoints.restore_variables(workdir)) for workdir in workdirs]
  for directory in exported:
    config, variables, info = export.load(directory)
    members.append((str(directory), config, variables, info['step']))
  if len(members) < 2:
    raise UserError('an ensemble needs at least two members; pass several runs as '
                    '--workdir=RUN1,RUN2 (or --model=DIR1,DIR2)')
  total, labels, scores = None, None, []
  for name, config, variables, step in members:
    probs, member_labels = probabilities(config, variables, split, data, tfds_data_dir, tta)
    if labels is not None and not np.array_equal(labels, member_labels):
      raise UserError(f'{name} was scored on other {split} examples than {members[0][0]}; pass '
                      'the same --data and --tfds_data_dir for every member')
    labels, total = member_labels, probs if total is None else total + probs
    member = score(probs, labels)
    scores.append({'source': name, 'model': config.model.name, 'step': step,
                   'accuracy': member['accuracy'], 'loss': member['loss']})
  return {'split': split, 'tta': tta, 'step': 'ensemble', 'members': scores,
          **score(total / len(members), labels)}


def _split_list(values: Sequence[str] | None) -> list[str]:
  """Repeated flags and comma-separated lists alike."""
  return [v for value in values or () for v in value.split(',') if v]


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  workdirs, models_ = _split_list(FLAGS.workdir), _split_list(FLAGS.model)
  if not workdirs and not models_:
    raise app.UsageError('give --workdir (a training run) or --model (an exported model)')
  ensemble = len(workdirs) + len(models_) > 1
  if ensemble and FLAGS.step is not None:
    raise app.UsageError('--step picks the checkpoint of one run; an ensemble uses each run\'s best')
  try:
    if ensemble:
      result = evaluate_ensemble(workdirs, [export.resolve(m) for m in models_], FLAGS.split,
                                 FLAGS.data, FLAGS.tfds_data_dir, FLAGS.tta)
    elif workdirs:
      result = evaluate_checkpoint(workdirs[0], FLAGS.split, FLAGS.data, FLAGS.tfds_data_dir,
                                   FLAGS.step, FLAGS.tta)
    else:
      result = evaluate_exported(export.resolve(models_[0]), FLAGS.split, FLAGS.data,
                                 FLAGS.tfds_data_dir, FLAGS.tta)
  except UserError as e:
    sys.exit(f'fer_flax: error: {e}')
  if ensemble:
    name = f'{result["split"]}-ensemble{len(result["members"])}'
  else:
    name = f'{result["split"]}-step{result["step"]}'
    if models_:
      name = f'{pathlib.Path(models_[0]).name}-{name}'
  if FLAGS.tta != 'none':
    name += f'-{FLAGS.tta}'
  eval_dir = epath.Path(workdirs[0] if workdirs else '.') / 'eval'
  path = epath.Path(FLAGS.json or eval_dir / f'{name}.json')
  print(report.format_report(result))
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + '\n')
    png = plots.confusion_matrix_png(result, path.with_suffix('.png'))
    print(f'\nwrote {path} and {png}')


def _define_flags() -> None:
  flags.DEFINE_multi_string('workdir', None, 'The training run to evaluate; several (repeated or '
                            'comma-separated) are scored as an ensemble.')
  flags.DEFINE_multi_string('model', None, 'Instead of, or besides, --workdir: "pretrained" (the '
                            'shipped model) or a folder written by fer_flax.export; its report '
                            'goes to ./eval/.')
  flags.DEFINE_string('split', 'public_test', 'train, public_test, private_test or test.')
  flags.DEFINE_string('data', None, 'FER2013 archive, folder or CSV; default: training\'s.')
  flags.DEFINE_string('tfds_data_dir', None, 'Prepared TFDS data dir; default: training\'s.')
  flags.DEFINE_integer('step', None, 'Checkpoint step to restore (one run only); default: the '
                       'best.')
  flags.DEFINE_enum('tta', 'none', augment.TTA_MODES,
                    'Test-time augmentation: average the probabilities of flipped or shifted '
                    'views.')
  flags.DEFINE_string('json', None, 'Where to write the report; default: WORKDIR/eval/NAME.json.')


if __name__ == '__main__':
  # Defined here, not at import, so that other modules and tests can import this one.
  _define_flags()
  app.run(main)
