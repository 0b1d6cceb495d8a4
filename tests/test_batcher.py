"""Micro-batching: concurrent callers share model calls, and each gets exactly its own rows."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from fer_flax.serve import batcher


def _classify(calls: list[int]):
  """A model whose answer for a crop is its mean, repeated: rows are checkable."""
  def classify(crops):
    calls.append(len(crops))
    return np.stack([np.full(7, c.mean()) for c in crops])
  return classify


def _crops(value: int, count: int) -> list[np.ndarray]:
  return [np.full((48, 48), value + i, np.uint8) for i in range(count)]


async def _gather(micro: batcher.MicroBatcher, jobs: list[list[np.ndarray]]) -> list[np.ndarray]:
  try:
    return await asyncio.gather(*(micro.classify(crops) for crops in jobs))
  finally:
    await micro.close()


def test_concurrent_callers_share_a_batch_and_get_their_own_rows():
  calls = []
  micro = batcher.MicroBatcher(_classify(calls), max_batch=64, max_wait=0.05)
  jobs = [_crops(10 * i, 1 + i % 3) for i in range(10)]
  answers = asyncio.run(_gather(micro, jobs))
  for crops, answer in zip(jobs, answers, strict=True):
    np.testing.assert_array_equal(answer[:, 0], [c.mean() for c in crops])
  assert calls == [sum(map(len, jobs))] and (micro.model_calls, micro.faces) == (1, 19)


def test_without_waiting_each_caller_is_classified_alone():
  calls = []
  micro = batcher.MicroBatcher(_classify(calls), max_batch=64, max_wait=0)
  jobs = [_crops(i, 2) for i in range(5)]
  answers = asyncio.run(_gather(micro, jobs))
  assert calls == [2] * 5
  np.testing.assert_array_equal(answers[3][:, 0], [3, 4])


def test_a_batch_stops_at_max_batch_and_never_splits_a_caller():
  calls = []
  micro = batcher.MicroBatcher(_classify(calls), max_batch=4, max_wait=0.05)
  jobs = [_crops(0, 3), _crops(10, 3), _crops(20, 1), _crops(30, 6)]
  answers = asyncio.run(_gather(micro, jobs))
  assert calls == [3, 4, 6]  # [3], then [3, 1], then the six alone (the model chunks them).
  np.testing.assert_array_equal(answers[3][:, 0], range(30, 36))


def test_a_failing_batch_fails_its_callers_and_the_next_is_served():
  state = {'fail': True}

  def classify(crops):
    if state.pop('fail', False):
      raise RuntimeError('model broke')
    return np.zeros((len(crops), 7))

  async def run():
    micro = batcher.MicroBatcher(classify, max_wait=0)
    try:
      with pytest.raises(RuntimeError, match='model broke'):
        await micro.classify(_crops(0, 1))
      return await micro.classify(_crops(0, 2))
    finally:
      await micro.close()

  assert asyncio.run(run()).shape == (2, 7)


def test_a_caller_that_gave_up_is_skipped():
  calls = []

  async def run():
    micro = batcher.MicroBatcher(_classify(calls), max_wait=0.05)
    try:
      gone = asyncio.ensure_future(micro.classify(_crops(0, 5)))
      await asyncio.sleep(0)
      gone.cancel()
      return await micro.classify(_crops(7, 1))
    finally:
      await micro.close()

  assert asyncio.run(run())[0, 0] == 7 and calls == [1]


def test_a_lone_caller_does_not_wait_when_no_one_is_coming():
  calls = []
  micro = batcher.MicroBatcher(_classify(calls), max_wait=30.0, coming=lambda: 0)
  start = time.perf_counter()
  answers = asyncio.run(_gather(micro, [_crops(1, 2)]))
  assert time.perf_counter() - start < 10 and calls == [2]  # not the 30 s it may wait
  np.testing.assert_array_equal(answers[0][:, 0], [1, 2])
