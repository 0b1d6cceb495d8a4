"""Scores a trained checkpoint on a FER2013 split.

  python -m fer_flax.evaluate --workdir=DIR --split=private_test [--data=PATH] [--step=N]
      [--json=FILE]

Restores the best checkpoint (by the eval accuracy recorded during training) or --step, with the
config saved in the workdir, and prints and writes {"split", "step", "examples", "accuracy", "loss"}.
"""

import json
import pathlib
import sys
from typing import Any

import jax
from absl import app, flags

from fer_flax import fer2013, input_pipeline, models, tfds_builder, train
from fer_flax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The training run to evaluate.')
flags.DEFINE_string('split', 'public_test', 'train, public_test, private_test or test.')
flags.DEFINE_string('data', None, 'FER2013 archive, folder or CSV; default: the one training used.')
flags.DEFINE_string('tfds_data_dir', None, 'Prepared TFDS data dir; default: the one training used.')
flags.DEFINE_integer('step', None, 'Checkpoint step to restore; default: the best.')
flags.DEFINE_string('json', None, 'Where to write the result; default: WORKDIR/eval/SPLIT-STEP.json.')
flags.mark_flags_as_required(['workdir'])


def evaluate_checkpoint(workdir: str, split: str, data: str | None = None,
                        tfds_data_dir: str | None = None, step: int | None = None) -> dict[str, Any]:
  """Restores a checkpoint of `workdir` and scores it on `split`."""
  config = train.load_config(workdir)
  parallel = train.Parallel()
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  manager = train.checkpoint_manager(workdir, config, read_only=True)
  step = manager.best_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise UserError(f'no checkpoint {"" if step is None else f"at step {step} "}in {workdir}/'
                    f'{train.CHECKPOINT_DIR} (it has steps {list(manager.all_steps())}); '
                    'pass one of those with --step')
  builder = tfds_builder.prepare(data or config.data.path,
                                 config.data.tfds_data_dir if tfds_data_dir is None else tfds_data_dir)
  eval_ds, _ = input_pipeline.eval_data(builder, split, config.eval_batch_size,
                                        jax.process_index(), jax.process_count())
  model = models.create_model(config.model, num_classes=len(fer2013.EMOTIONS))
  tx = train.create_optimizer(config, train.create_learning_rate_schedule(config, 1, 1))
  state = train.create_train_state(model, tx, jax.random.key(0), parallel.replicated)
  state = train.restore(manager, state, step)
  result = train.evaluate(state, parallel.jit_eval_step(),
                          map(parallel.to_global, eval_ds.as_numpy_iterator()))
  return {'split': split, 'step': step, **result}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    result = evaluate_checkpoint(FLAGS.workdir, FLAGS.split, FLAGS.data, FLAGS.tfds_data_dir,
                                 FLAGS.step)
  except UserError as e:
    sys.exit(f'fer_flax: error: {e}')
  path = pathlib.Path(FLAGS.json or pathlib.Path(FLAGS.workdir, 'eval',
                                                 f'{result["split"]}-{result["step"]}.json'))
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + '\n')
  print(f'{result["split"]} at step {result["step"]}: accuracy {result["accuracy"]:.4f}, '
        f'loss {result["loss"]:.4f} on {result["examples"]} examples -> {path}')


if __name__ == '__main__':
  app.run(main)
