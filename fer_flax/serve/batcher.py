"""Micro-batching: faces from concurrent requests classified in one batch.

A batch of one face costs nearly as much per face as a batch of sixteen costs in all
(docs/serve.md), so a server that classifies each request alone wastes most of the model's time
when many clients call at once. Callers hand their faces to `MicroBatcher.classify` and await
their probabilities; one worker takes what is queued, waits up to `max_wait` seconds for more
company (up to `max_batch` faces) while `coming()` says other callers are still finding their
faces, classifies them together in a thread (off the event loop) and hands each caller its own
rows. A lone caller, with no one coming, is classified at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass
class _Job:
  crops: Sequence[np.ndarray]
  done: asyncio.Future


class MicroBatcher:
  """Classifies the faces of concurrent callers together. `max_wait` 0 classifies each caller's
  faces alone (no micro-batching), as they come. `coming` counts the callers whose faces are on
  their way (default: always some, so a batch always waits its `max_wait`)."""

  def __init__(self, classify: Callable[[Sequence[np.ndarray]], np.ndarray], max_batch: int = 64,
               max_wait: float = 0.005, coming: Callable[[], int] = lambda: 1):
    self._classify, self._coming = classify, coming
    self.max_batch, self.max_wait = max_batch, max_wait
    self._queue: asyncio.Queue[_Job] | None = None
    self._worker: asyncio.Task | None = None
    self._held: _Job | None = None  # Too big to join the last batch: it opens the next.
    self.model_calls = self.faces = 0  # What the model did, for tests and benchmarks.

  async def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
    """[len(crops), 7] probabilities, classified with whatever other callers sent meanwhile."""
    loop = asyncio.get_running_loop()
    if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
      self._queue, self._held = asyncio.Queue(), None  # One worker per event loop.
      self._worker = loop.create_task(self._run())
    job = _Job(crops, loop.create_future())
    await self._queue.put(job)
    return await job.done

  async def close(self) -> None:
    """Stops the worker (callers still waiting are cancelled)."""
    if self._worker is not None:
      self._worker.cancel()
      await asyncio.gather(self._worker, return_exceptions=True)
      self._worker = None

  async def _next_batch(self) -> list[_Job]:
    """The next job, and with micro-batching those that come within `max_wait` while others are
    coming, up to `max_batch` faces (a job is never split)."""
    jobs = [self._held or await self._queue.get()]
    self._held = None
    if self.max_wait <= 0:
      return jobs
    size = len(jobs[0].crops)
    deadline = asyncio.get_running_loop().time() + self.max_wait
    while size < self.max_batch and (self._coming() > 0 or not self._queue.empty()):
      try:
        job = await asyncio.wait_for(self._queue.get(),
                                     deadline - asyncio.get_running_loop().time())
      except TimeoutError:
        break
      if size + len(job.crops) > self.max_batch:
        self._held = job
        break
      jobs.append(job)
      size += len(job.crops)
    return jobs

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      jobs = [j for j in await self._next_batch() if not j.done.cancelled()]
      if not jobs:
        continue
      crops = [c for j in jobs for c in j.crops]
      try:
        probabilities = await loop.run_in_executor(None, self._classify, crops)
      except Exception as e:  # Every caller of the batch hears of it; the worker goes on.
        for job in jobs:
          if not job.done.done():
            job.done.set_exception(e)
        continue
      self.model_calls += 1
      self.faces += len(crops)
      start = 0
      for job in jobs:
        if not job.done.done():
          job.done.set_result(probabilities[start:start + len(job.crops)])
        start += len(job.crops)
