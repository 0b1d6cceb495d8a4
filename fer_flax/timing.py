"""Time to accuracy: the wall time of a run, the part spent compiling, and when it reached a target.

  python -m fer_flax.timing --workdir=DIR[,DIR2,...] [--accuracy=0.72]

Training (`train.clock`) stamps every evaluation record of `metrics.jsonl` with `elapsed_seconds`
(wall time since the command started), `compile_seconds` (the part of it JAX spent tracing, lowering
and compiling) and `train_seconds` (wall time since the first training step, less compiling). This
command prints, for each run, the first evaluation at or above the target accuracy and when it came.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from fer_flax.core import cli
from fer_flax.core.errors import UserError, exits_on_user_error
from fer_flax.train import writers


def time_to_accuracy(records: Sequence[dict[str, Any]], accuracy: float,
                     split: str = 'public_test') -> dict[str, Any]:
  """The first evaluation of `split` at or above `accuracy`, or the best one when none is."""
  evals = [r for r in records if r.get('split') == split and 'accuracy' in r]
  if not evals:
    raise UserError(f'no {split} evaluation in the metrics yet; train for at least one epoch')
  reached = next((r for r in evals if r['accuracy'] >= accuracy), None)
  best = max(evals, key=lambda r: r['accuracy'])
  resumed = any(b.get('elapsed_seconds', 0) < a.get('elapsed_seconds', 0)
                for a, b in itertools.pairwise(evals))
  return {'target': accuracy, 'reached': reached is not None, 'record': reached or best,
          'best': best, 'resumed': resumed}


def format_result(workdir: str, result: dict[str, Any]) -> str:
  r = result['record']
  times = (f'{r["train_seconds"]:.1f} s of training ({r["elapsed_seconds"]:.1f} s since the '
           f'command started, {r["compile_seconds"]:.1f} s of it compiling)'
           if 'train_seconds' in r else 'no times recorded (a run from before they were)')
  if result['reached']:
    line = (f'{workdir}: {r["accuracy"]:.4f} >= {result["target"]:.4f} at step {r["step"]}, '
            f'after {times}')
  else:
    line = (f'{workdir}: never reached {result["target"]:.4f}; best {r["accuracy"]:.4f} at step '
            f'{r["step"]}, after {times}')
  if result['resumed']:
    line += '; the run was resumed, and times restart at each resumption'
  return line


FLAGS = flags.FLAGS


@exits_on_user_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  for workdir in cli.split_list(FLAGS.workdir):
    print(format_result(workdir, time_to_accuracy(writers.read_run_metrics(workdir),
                                                  FLAGS.accuracy, FLAGS.split)))


def _define_flags() -> None:
  flags.DEFINE_multi_string('workdir', None, 'Training runs (repeated or comma-separated).')
  flags.DEFINE_float('accuracy', 0.72, 'The target accuracy.')
  flags.DEFINE_string('split', 'public_test', 'The evaluated split.')
  flags.mark_flag_as_required('workdir')


def run() -> None:
  """`fer-flax-timing`, `python -m fer_flax.timing`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
