"""Scores trained models, or their ensemble, on a FER2013 split and writes a report.

  python -m fer_flax.evaluate --workdir=DIR --split=private_test [--data=PATH] [--step=N]
      [--tta=none|flip|tencrop] [--pipeline=tfds|memory] [--json=FILE]
  python -m fer_flax.evaluate --model=pretrained --split=public_test --data=PATH
  python -m fer_flax.evaluate --workdir=RUN1,RUN2,RUN3 --tta=flip   # an ensemble
  python -m fer_flax.evaluate --exported=MODEL.tflite|MODEL.onnx|SAVEDMODEL --data=PATH  # no JAX

Restores the best checkpoint of each workdir (by the eval accuracy recorded during training) or
--step, with the config saved in the workdir. Several workdirs or models form an ensemble that
averages their probabilities. Prints a table and writes, into the (first) WORKDIR/eval/, the JSON
report (accuracy, loss, per-class precision/recall/F1/support, macro-F1, balanced accuracy,
confusion matrices) and a confusion-matrix PNG.

Training evaluates through `train.evaluation` too, with the same input and step. The input
is the run's own (`config.data.pipeline`) unless --pipeline says otherwise; where TensorFlow cannot
be imported it is the in-memory one.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags
from etils import epath

from fer_flax.core import cli
from fer_flax.core.errors import UserError, exits_on_user_error
from fer_flax.data import augment, feeds, fer2013
from fer_flax.serve import loading
from fer_flax.train import evaluation, report

FLAGS = flags.FLAGS


def evaluate_model(loaded: loading.LoadedModel, split: str, data: str | None = None,
                   tfds_data_dir: str | None = None, tta: str = 'none',
                   pipeline: str | None = None) -> dict[str, Any]:
  """Scores a loaded model (a run's checkpoint or a package) on `split`: the full report."""
  return {'step': loaded.step, 'model': loaded.source,
          **evaluation.evaluate_variables(loaded.config, loaded.variables, split, data,
                                          tfds_data_dir, tta, pipeline)}


def evaluate_ensemble(members: Sequence[loading.LoadedModel], split: str, data: str | None = None,
                      tfds_data_dir: str | None = None, tta: str = 'none',
                      pipeline: str | None = None) -> dict[str, Any]:
  """Scores the ensemble of loaded models: their mean probability.

  Each member is also scored alone, so the report shows what the ensemble adds. Every member
  reads the split through one input, so their examples line up.
  """
  if len(members) < 2:
    raise UserError('an ensemble needs at least two members; pass several runs as '
                    '--workdir=RUN1,RUN2 (or --model=DIR1,DIR2)')
  pipeline = feeds.eval_pipeline(members[0].config, pipeline)
  total, labels, scores = None, None, []
  for member in members:
    probs, member_labels = evaluation.probabilities(member.config, member.variables, split, data,
                                                    tfds_data_dir, tta, pipeline)
    if labels is not None and not np.array_equal(labels, member_labels):
      raise UserError(f'{member.source} was scored on other {split} examples than '
                      f'{members[0].source}; pass the same --data and --tfds_data_dir for every '
                      'member')
    labels, total = member_labels, probs if total is None else total + probs
    alone = evaluation.score(probs, labels)
    scores.append({'source': member.source, 'model': member.config.model.name,
                   'step': member.step, 'accuracy': alone['accuracy'], 'loss': alone['loss']})
  return {'split': split, 'tta': tta, 'step': 'ensemble', 'members': scores,
          **evaluation.score(total / len(members), labels)}


def evaluate_exported(path: str | pathlib.Path, split: str, data: str | None,
                      batch_size: int = 256) -> dict[str, Any]:
  """Scores a SavedModel, TFLite or ONNX model (`fer_flax.serve.exported`) on `split`, run by its
  runtime (TensorFlow, LiteRT or onnxruntime)."""
  from fer_flax.serve import exported  # pylint: disable=g-import-not-at-top
  if not data:
    raise UserError('an exported model carries no data path; pass --data=PATH/TO/fer2013.zip')
  images, labels = fer2013.load_split(fer2013.Source(data), split)
  run = exported.load(path)
  probs = np.concatenate([run(images[i:i + batch_size])
                          for i in range(0, len(images), batch_size)])
  return {'split': split, 'tta': 'none', 'step': pathlib.Path(path).name, 'model': str(path),
          **evaluation.score(probs, labels)}


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
  workdirs_, models_ = cli.split_list(FLAGS.workdir), cli.split_list(FLAGS.model)
  if FLAGS.exported:
    result = evaluate_exported(FLAGS.exported, FLAGS.split, FLAGS.data)
    print(report.format_report(result))
    if FLAGS.json:
      epath.Path(FLAGS.json).write_text(json.dumps(result, indent=2) + '\n')
    return
  if not workdirs_ and not models_:
    raise app.UsageError('give --workdir (a training run), --model or --exported')
  ensemble = len(workdirs_) + len(models_) > 1
  if ensemble and FLAGS.step is not None:
    raise app.UsageError('--step picks the checkpoint of one run; an ensemble uses each '
                         'run\'s best')
  options = dict(data=FLAGS.data, tfds_data_dir=FLAGS.tfds_data_dir, tta=FLAGS.tta,
                 pipeline=FLAGS.pipeline)
  members = ([loading.load_model(workdir=w, step=FLAGS.step) for w in workdirs_]
             + [loading.load_model(m) for m in models_])
  if ensemble:
    result = evaluate_ensemble(members, FLAGS.split, **options)
  else:
    result = evaluate_model(members[0], FLAGS.split, **options)
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
  flags.DEFINE_enum('pipeline', None, feeds.PIPELINES, 'How the split is read: tfds (tf.data) '
                    'or memory (no TensorFlow); default: the run\'s own, memory without '
                    'TensorFlow.')
  flags.DEFINE_string('json', None, 'Where to write the report; default: WORKDIR/eval/NAME.json.')


def run() -> None:
  """`fer-flax-evaluate`, `python -m fer_flax.evaluate`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
