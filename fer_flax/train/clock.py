"""The run's clock: wall time since the command started, and the part JAX spent compiling.

Training stamps every evaluation record with these times (`python -m fer_flax.timing` reads them).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from jax import monitoring

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
