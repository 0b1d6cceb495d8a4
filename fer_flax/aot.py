"""Compiles a config for a Cloud TPU slice on a host without TPUs, and says whether it fits.

  python -m fer_flax.aot --config=configs/fast.py --accelerator_type=v6e-256 [--json=FILE]
      [--tta=none,flip,tencrop] [--config.FIELD=VALUE ...]

What it compiles and reports, and how: `fer_flax.train.aot` and docs/tpu_compile.md. Nothing
executes: the figures are compiled-for, not run-on.
"""

from __future__ import annotations

import json

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from fer_flax.core import chips, cli
from fer_flax.core.errors import exits_on_user_error
from fer_flax.data import augment
from fer_flax.train import aot

FLAGS = flags.FLAGS


@exits_on_user_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  for mode in FLAGS.tta:
    augment.check_tta(mode, '--tta')
  report = aot.check(FLAGS.config, FLAGS.accelerator_type, FLAGS.tta)
  print(aot.format_report(report))
  if FLAGS.json:
    epath.Path(FLAGS.json).write_text(json.dumps(report, indent=2) + '\n')
  aot.refuse_unless_fits(report)


def _define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Training config file (configs/*.py).',
                                  lock_config=True)
  flags.DEFINE_string('accelerator_type', None,
                      f'Cloud TPU accelerator type: {", ".join(chips.tpu_slices())}')
  flags.DEFINE_list('tta', list(augment.TTA_MODES),
                    "evaluate's test-time augmentations to compile (training's, none, always is)")
  flags.DEFINE_string('json', None, 'Also write the report here as JSON.')
  flags.mark_flags_as_required(['config', 'accelerator_type'])


def run() -> None:
  """`fer-flax-aot`, `python -m fer_flax.aot`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
