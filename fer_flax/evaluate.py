"""Scores a trained checkpoint on a FER2013 split and writes a report a researcher can use.

  python -m fer_flax.evaluate --workdir=DIR --split=private_test [--data=PATH] [--step=N]
      [--tta=none|flip|tencrop] [--json=FILE]
  python -m fer_flax.evaluate --model=pretrained --split=public_test --data=PATH

Restores the best checkpoint (by the eval accuracy recorded during training) or --step, with the
config saved in the workdir. Prints a table and writes, into WORKDIR/eval/, the JSON report
(accuracy, loss, per-class precision/recall/F1/support, macro-F1, balanced accuracy, confusion
matrices) and a confusion-matrix PNG.
"""

import json
import pathlib
import sys
from typing import Any

import jax
import ml_collections
from absl import app, flags

from fer_flax import augment, checkpoints, export, fer2013, input_pipeline, models, plots, report
from fer_flax import tfds_builder, train
from fer_flax.errors import UserError

FLAGS = flags.FLAGS


def evaluate_model(config: ml_collections.ConfigDict, variables: dict[str, Any], split: str,
                   data: str | None = None, tfds_data_dir: str | None = None,
                   tta: str = 'none') -> dict[str, Any]:
  """Scores model variables trained with `config` on `split`; returns the full report."""
  parallel = train.Parallel()
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  if tfds_data_dir is None:
    tfds_data_dir = config.data.tfds_data_dir
  builder = tfds_builder.prepare(data or config.data.path, tfds_data_dir)
  eval_ds, _ = input_pipeline.eval_data(builder, split, config.eval_batch_size,
                                        jax.process_index(), jax.process_count())
  model = models.create_model(config.model, num_classes=len(fer2013.EMOTIONS))
  variables = jax.device_put(variables, parallel.replicated)
  result = train.evaluate(variables, parallel.jit_eval_step(model.apply, tta),
                          map(parallel.to_global, eval_ds.as_numpy_iterator()))
  return {'split': split, 'tta': tta, 'examples': result['examples'], 'loss': result['loss'],
          **report.classification_report(result['confusion'], fer2013.EMOTIONS)}


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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if (FLAGS.model is None) == (FLAGS.workdir is None):
    raise app.UsageError('give exactly one of --workdir and --model')
  try:
    if FLAGS.workdir:
      result = evaluate_checkpoint(FLAGS.workdir, FLAGS.split, FLAGS.data, FLAGS.tfds_data_dir,
                                   FLAGS.step, FLAGS.tta)
    else:
      result = evaluate_exported(export.resolve(FLAGS.model), FLAGS.split, FLAGS.data,
                                 FLAGS.tfds_data_dir, FLAGS.tta)
  except UserError as e:
    sys.exit(f'fer_flax: error: {e}')
  name = f'{result["split"]}-step{result["step"]}'
  if FLAGS.model:
    name = f'{pathlib.Path(FLAGS.model).name}-{name}'
  if FLAGS.tta != 'none':
    name += f'-{FLAGS.tta}'
  eval_dir = pathlib.Path(FLAGS.workdir or '.', 'eval')
  path = pathlib.Path(FLAGS.json or eval_dir / f'{name}.json')
  print(report.format_report(result))
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + '\n')
    png = plots.confusion_matrix_png(result, path.with_suffix('.png'))
    print(f'\nwrote {path} and {png}')


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The training run to evaluate.')
  flags.DEFINE_string('model', None, 'Instead of --workdir: "pretrained" (the shipped model) or a '
                      'folder written by fer_flax.export; its report goes to ./eval/.')
  flags.DEFINE_string('split', 'public_test', 'train, public_test, private_test or test.')
  flags.DEFINE_string('data', None, 'FER2013 archive, folder or CSV; default: training\'s.')
  flags.DEFINE_string('tfds_data_dir', None, 'Prepared TFDS data dir; default: training\'s.')
  flags.DEFINE_integer('step', None, 'Checkpoint step to restore; default: the best.')
  flags.DEFINE_enum('tta', 'none', augment.TTA_MODES,
                    'Test-time augmentation: average the probabilities of flipped or shifted '
                    'views.')
  flags.DEFINE_string('json', None, 'Where to write the report; default: WORKDIR/eval/NAME.json.')


if __name__ == '__main__':
  # Defined here, not at import, so that other modules and tests can import this one.
  _define_flags()
  app.run(main)
