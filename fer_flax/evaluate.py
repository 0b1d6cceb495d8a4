"""Scores trained models, or their ensemble, on a FER2013 split and writes a report.

  python -m fer_flax.evaluate --workdir=DIR --split=private_test [--data=PATH] [--step=N]
      [--tta=none|flip|tencrop] [--pipeline=tfds|memory] [--json=FILE]
  python -m fer_flax.evaluate --model=pretrained --split=public_test --data=PATH
  python -m fer_flax.evaluate --workdir=RUN1,RUN2,RUN3 --tta=flip   # an ensemble
  python -m fer_flax.evaluate --exported=MODEL.tflite|MODEL.onnx|SAVEDMODEL_DIR --data=PATH  # no JAX

Restores the best checkpoint of each workdir (by the eval accuracy recorded during training) or
--step, with the config saved in the workdir. Several workdirs or models form an ensemble that
averages their probabilities. Prints a table and writes, into the (first) WORKDIR/eval/, the JSON
report (accuracy, loss, per-class precision/recall/F1/support, macro-F1, balanced accuracy,
confusion matrices) and a confusion-matrix PNG.

Training evaluates through `predictions` and `score` too, with the same input and step. The input
is the run's own (`config.data.pipeline`) unless --pipeline says otherwise; where TensorFlow cannot
be imported it is the in-memory one.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath

from fer_flax import augment, export, fer2013, in_memory, inputs, models, report, steps, workdirs
from fer_flax.errors import UserError, exits_on_user_error
from fer_flax.sharding import Batch, Parallel

FLAGS = flags.FLAGS


def predictions(eval_step: Callable, variables: dict[str, Any],
                batches: Iterable[Batch]) -> tuple[np.ndarray, np.ndarray]:
  """([N, classes] probabilities, [N] labels) of every example (padding dropped) of `batches`."""
  outputs = jax.device_get([eval_step(variables, batch) for batch in batches])
  joined = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  mask = joined['mask'].astype(bool)
  return joined['probabilities'][mask], joined['label'][mask]


def score(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """Loss (mean negative log-likelihood), accuracy and the classification report."""
  confusion = np.zeros((fer2013.NUM_CLASSES, fer2013.NUM_CLASSES), np.int64)
  np.add.at(confusion, (labels, probs.argmax(-1)), 1)
  picked = probs[np.arange(len(labels)), labels]
  loss = float(-np.log(np.maximum(picked, np.finfo(np.float32).tiny)).mean())
  return {'examples': int(len(labels)), 'loss': loss,
          **report.classification_report(confusion, fer2013.EMOTIONS)}


def _with_data(config: ml_collections.ConfigDict, data: str | None,
               tfds_data_dir: str | None) -> ml_collections.ConfigDict:
  """The run's config, reading the data from where this command was told it is."""
  config = ml_collections.ConfigDict(config.to_dict())
  if data:
    config.data.path = data
  if tfds_data_dir is not None:
    config.data.tfds_data_dir = tfds_data_dir
  return config


def probabilities(config: ml_collections.ConfigDict, variables: dict[str, Any], split: str,
                  data: str | None = None, tfds_data_dir: str | None = None,
                  tta: str = 'none', pipeline: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """([N, classes] probabilities, [N] labels) of model variables trained with `config`."""
  config = _with_data(config, data, tfds_data_dir)
  parallel = Parallel()
  batches = inputs.eval_batches(config, parallel, split, pipeline)
  eval_step = steps.compile_eval_step(models.create_model(config.model).apply, parallel, tta)
  return predictions(eval_step, jax.device_put(variables, parallel.replicated), batches)


def evaluate_model(config: ml_collections.ConfigDict, variables: dict[str, Any], split: str,
                   data: str | None = None, tfds_data_dir: str | None = None,
                   tta: str = 'none', pipeline: str | None = None) -> dict[str, Any]:
  """Scores model variables trained with `config` on `split`; returns the full report."""
  probs, labels = probabilities(config, variables, split, data, tfds_data_dir, tta, pipeline)
  return {'split': split, 'tta': tta, **score(probs, labels)}


def evaluate_checkpoint(workdir: str, split: str, data: str | None = None,
                        tfds_data_dir: str | None = None, step: int | None = None,
                        tta: str = 'none', pipeline: str | None = None) -> dict[str, Any]:
  """Restores the best checkpoint of `workdir` (or `step`) and scores it on `split`."""
  config, variables, step = workdirs.restore_variables(workdir, step)
  return {'step': step,
          **evaluate_model(config, variables, split, data, tfds_data_dir, tta, pipeline)}


def evaluate_exported(directory: str | pathlib.Path, split: str, data: str | None = None,
                      tfds_data_dir: str | None = None, tta: str = 'none',
                      pipeline: str | None = None) -> dict[str, Any]:
  """Scores an exported model (the shipped one, by default) on `split`."""
  config, variables, info = export.load(directory)
  return {'step': info['step'], 'model': str(directory),
          **evaluate_model(config, variables, split, data, tfds_data_dir, tta, pipeline)}


def evaluate_ensemble(workdirs_: Sequence[str], exported: Sequence[str | pathlib.Path],
                      split: str, data: str | None = None, tfds_data_dir: str | None = None,
                      tta: str = 'none', pipeline: str | None = None) -> dict[str, Any]:
  """Scores the ensemble of runs' best checkpoints and exported models: their mean probability.

  Each member is also scored alone, so the report shows what the ensemble adds. Every member
  reads the split through one input, so their examples line up.
  """
  members = [(workdir, *workdirs.restore_variables(workdir)) for workdir in workdirs_]
  for directory in exported:
    config, variables, info = export.load(directory)
    members.append((str(directory), config, variables, info['step']))
  if len(members) < 2:
    raise UserError('an ensemble needs at least two members; pass several runs as '
                    '--workdir=RUN1,RUN2 (or --model=DIR1,DIR2)')
  pipeline = inputs.eval_pipeline(members[0][1], pipeline)
  total, labels, scores = None, None, []
  for name, config, variables, step in members:
    probs, member_labels = probabilities(config, variables, split, data, tfds_data_dir, tta,
                                         pipeline)
    if labels is not None and not np.array_equal(labels, member_labels):
      raise UserError(f'{name} was scored on other {split} examples than {members[0][0]}; pass '
                      'the same --data and --tfds_data_dir for every member')
    labels, total = member_labels, probs if total is None else total + probs
    member = score(probs, labels)
    scores.append({'source': name, 'model': config.model.name, 'step': step,
                   'accuracy': member['accuracy'], 'loss': member['loss']})
  return {'split': split, 'tta': tta, 'step': 'ensemble', 'members': scores,
          **score(total / len(members), labels)}


def evaluate_deployed(path: str | pathlib.Path, split: str, data: str | None,
                      batch_size: int = 256) -> dict[str, Any]:
  """Scores a SavedModel, TFLite or ONNX model (`fer_flax.deploy`) on `split`, run by its
  runtime (TensorFlow, LiteRT or onnxruntime)."""
  from fer_flax import deploy  # pylint: disable=g-import-not-at-top
  if not data:
    raise UserError('an exported model carries no data path; pass --data=PATH/TO/fer2013.zip')
  images, labels = in_memory.load_split(fer2013.Source(data), split)
  run = deploy.load(path)
  probs = np.concatenate([run(images[i:i + batch_size])
                          for i in range(0, len(images), batch_size)])
  return {'split': split, 'tta': 'none', 'step': pathlib.Path(path).name, 'model': str(path),
          **score(probs, labels)}


def _split_list(values: Sequence[str] | None) -> list[str]:
  """Repeated flags and comma-separated lists alike."""
  return [v for value in values or () for v in value.split(',') if v]


def _report_name(result: dict[str, Any], models_: list[str]) -> str:
  if 'members' in result:
    name = f'{result["split"]}-ensemble{len(result["members"])}'
  else:
    name = f'{result["split"]}-step{result["step"]}'
    if models_:
      name = f'{pathlib.Path(models_[0]).name}-{name}'
  return name if result['tta'] == 'none' else f'{name}-{result["tta"]}'


@exits_on_user_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  workdirs_, models_ = _split_list(FLAGS.workdir), _split_list(FLAGS.model)
  if FLAGS.exported:
    result = evaluate_deployed(FLAGS.exported, FLAGS.split, FLAGS.data)
    print(report.format_report(result))
    if FLAGS.json:
      epath.Path(FLAGS.json).write_text(json.dumps(result, indent=2) + '\n')
    return
  if not workdirs_ and not models_:
    raise app.UsageError('give --workdir (a training run), --model or --exported')
  ensemble = len(workdirs_) + len(models_) > 1
  if ensemble and FLAGS.step is not None:
    raise app.UsageError('--step picks the checkpoint of one run; an ensemble uses each run\'s best')
  options = dict(data=FLAGS.data, tfds_data_dir=FLAGS.tfds_data_dir, tta=FLAGS.tta,
                 pipeline=FLAGS.pipeline)
  if ensemble:
    result = evaluate_ensemble(workdirs_, [export.resolve(m) for m in models_], FLAGS.split,
                               **options)
  elif workdirs_:
    result = evaluate_checkpoint(workdirs_[0], FLAGS.split, step=FLAGS.step, **options)
  else:
    result = evaluate_exported(export.resolve(models_[0]), FLAGS.split, **options)
  eval_dir = epath.Path(workdirs_[0] if workdirs_ else '.') / 'eval'
  path = epath.Path(FLAGS.json or eval_dir / f'{_report_name(result, models_)}.json')
  print(report.format_report(result))
  if jax.process_index() == 0:
    from fer_flax import plots  # matplotlib loads here.  # pylint: disable=g-import-not-at-top
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
  flags.DEFINE_string('exported', None, 'A SavedModel folder, .tflite or .onnx file written by '
                      'fer_flax.export --format=...; scored without JAX (needs --data).')
  flags.DEFINE_string('split', 'public_test', 'train, public_test, private_test or test.')
  flags.DEFINE_string('data', None, 'FER2013 archive, folder or CSV; default: training\'s.')
  flags.DEFINE_string('tfds_data_dir', None, 'Prepared TFDS data dir; default: training\'s.')
  flags.DEFINE_integer('step', None, 'Checkpoint step to restore (one run only); default: the '
                       'best.')
  flags.DEFINE_enum('tta', 'none', augment.TTA_MODES,
                    'Test-time augmentation: average the probabilities of flipped or shifted '
                    'views.')
  flags.DEFINE_enum('pipeline', None, inputs.PIPELINES, 'How the split is read: tfds (tf.data) '
                    'or memory (no TensorFlow); default: the run\'s own, memory without '
                    'TensorFlow.')
  flags.DEFINE_string('json', None, 'Where to write the report; default: WORKDIR/eval/NAME.json.')


if __name__ == '__main__':
  # Defined here, not at import, so that other modules and tests can import this one.
  _define_flags()
  app.run(main)
