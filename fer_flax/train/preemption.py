"""Preemption: on SIGTERM, checkpoint at the next step boundary and stop; the same command resumes.

Cloud TPU and Kubernetes send SIGTERM some seconds before they take a machine away.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
from absl import logging
from jax.experimental import multihost_utils

# The exit status of a process ended by SIGTERM, so that a scheduler restarts the job rather than
# count it finished.
EXIT_STATUS = 128 + signal.SIGTERM


class Preempted(Exception):
  """Training stopped early on a preemption notice, with a checkpoint at `step`."""

  def __init__(self, step: int):
    super().__init__(f'preempted: checkpoint saved at step {step}; run the same command to resume')
    self.step = step


class Watch:
  """Says when the run must checkpoint and stop.

  With one process, a SIGTERM handler notes the signal. With several, JAX's preemption sync
  manager (started by `jax.distributed.initialize`, which handles SIGTERM itself) picks one call at
  which every process stops, since a checkpoint needs all of them.
  """

  def __init__(self):
    self._signalled = False
    self._previous: Any = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._note)

  def _note(self, signum: int, frame: Any) -> None:
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint after the current step, then stopping')
    self._signalled = True

  def reached(self, call: int) -> bool:
    """Whether to stop after call number `call` (counted from 0 by every process alike)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(call)
    return self._signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def __enter__(self) -> Watch:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()
