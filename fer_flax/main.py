"""Trains a FER2013 classifier.

  python -m fer_flax.main --config=configs/base.py --workdir=/tmp/run \
      --config.data.path=PATH/TO/fer2013.zip

Re-running the same command resumes from the workdir's latest checkpoint. On SIGTERM it saves a
checkpoint after the current step and exits with status 143, for the scheduler to restart it.
"""

import logging as std_logging
import os
import sys
import time

_STARTED = time.perf_counter()  # Before JAX loads: time to accuracy counts the start-up too.

# Set before TensorFlow loads, to keep its C++ start-up chatter off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
from absl import app, flags, logging
from ml_collections import config_flags

from fer_flax.core import cli
from fer_flax.core.errors import exits_on_user_error
from fer_flax.train import distributed, loop, preemption

FLAGS = flags.FLAGS


class _QuietLibraries(std_logging.Filter):
  """Keeps orbax's and TFDS's per-operation INFO lines off the console; warnings still pass."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        part in record.pathname for part in ('/orbax/', '/tensorflow_datasets/'))


@exits_on_user_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  distributed.initialize(FLAGS.config)
  logging.info('JAX process %d/%d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir, started=_STARTED)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(preemption.EXIT_STATUS)


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and the saved config.')
  config_flags.DEFINE_config_file('config', None, 'Training config file (configs/*.py).',
                                  lock_config=True)
  flags.mark_flags_as_required(['config', 'workdir'])


def run() -> None:
  """`fer-flax-train`, `python -m fer_flax.main`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
