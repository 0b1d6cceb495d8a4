"""Time to accuracy: the wall time of a run, the part spent compiling, and when it reached a target.

  python -m fer_flax.timing --workdir=DIR[,DIR2,...] [--accuracy=0.72]

Training stamps every evaluation record of `metrics.jsonl` with `elapsed_seconds` (wall time since
the command started), `compile_seconds` (the part of it JAX spent tracing, lowering and compiling)
and `train_seconds` (wall time since the first training step, less compiling). This command prints,
for each run, the first evaluation at or above the target accuracy and when it came.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from absl import app, flags
from jax import monitoring

from fer_flax import writers
from fer_flax.errors import UserError, exits_on_user_error

_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_compile_seconds = 0.0
_lock = threading.Lock()
_listening = False


def _note(event: str, seconds: float, **kwargs: Any) -> None:
  del kwargs
  global _compile_seconds
  if event in _COMPILE_EVENTS:
    with _lock:
      _compile_seconds += seconds


class Clock:
  """Wall time since `start` (a `time.perf_counter()` value), and the compile time within it."""

  def __init__(self, start: float | None = None):
    global _listening
    if not _listening:  # JAX keeps listeners for the life of the process: register one, once.
      monitoring.register_event_duration_secs_listener(_note)
      _listening = True
    self._start = time.perf_counter() if start is None else start
    self._compiled_before = _compile_seconds
    self._first_step: tuple[float, float] | None = None

  def elapsed(self) -> float:
    return time.perf_counter() - self._start

  def compile_seconds(self) -> float:
    """Compile time since this clock was made (JAX reports it for the whole process)."""
    return _compile_seconds - self._compiled_before

  def first_step(self) -> None:
    """Marks the start of training: `train_seconds` counts from here."""
    if self._first_step is None:
      self._first_step = (self.elapsed(), self.compile_seconds())

  def stamp(self) -> dict[str, float]:
    """The three times an evaluation record carries."""
    elapsed, compiled = self.elapsed(), self.compile_seconds()
    start, compiled_before = self._first_step or (elapsed, compiled)
    return {'elapsed_seconds': elapsed, 'compile_seconds': compiled,
            'train_seconds': elapsed - start - (compiled - compiled_before)}


def time_to_accuracy(records: Sequence[dict[str, Any]], accuracy: float,
                     split: str = 'public_test') -> dict[str, Any]:
  """The first evaluation of `split` at or above `accuracy`, or the best one when none is."""
  evals = [r for r in records if r.get('split') == split and 'accuracy' in r]
  if not evals:
    raise UserError(f'no {split} evaluation in the metrics yet; train for at least one epoch')
  reached = next((r for r in evals if r['accuracy'] >= accuracy), None)
  best = max(evals, key=lambda r: r['accuracy'])
  resumed = any(b.get('elapsed_seconds', 0) < a.get('elapsed_seconds', 0)
                for a, b in zip(evals, evals[1:]))
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
  for workdir in [w for value in FLAGS.workdir for w in value.split(',') if w]:
    print(format_result(workdir, time_to_accuracy(writers.read_run_metrics(workdir),
                                                  FLAGS.accuracy, FLAGS.split)))


if __name__ == '__main__':
  flags.DEFINE_multi_string('workdir', None, 'Training runs (repeated or comma-separated).')
  flags.DEFINE_float('accuracy', 0.72, 'The target accuracy.')
  flags.DEFINE_string('split', 'public_test', 'The evaluated split.')
  flags.mark_flag_as_required('workdir')
  app.run(main)
