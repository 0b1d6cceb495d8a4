"""Metric writers: CLU (TensorBoard and console) plus `metrics.jsonl` for scripts.

Where TensorFlow, and so CLU, cannot be imported, the console and `metrics.jsonl` still work.

Scalars are named `SPLIT/NAME`; `metrics.jsonl` gets one JSON object per write and split:
`{"step": 900, "split": "public_test", "accuracy": 0.51, "loss": 1.32}`.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping
from typing import Any

from absl import logging
from etils import epath

from fer_flax.core.errors import UserError

METRICS_FILE = 'metrics.jsonl'


def read_metrics(path: epath.PathLike) -> list[dict[str, Any]]:
  """The records of a `metrics.jsonl`, skipping a line torn by a crash mid-write."""
  records = []
  for line in epath.Path(path).read_text().splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


def read_run_metrics(workdir: epath.PathLike) -> list[dict[str, Any]]:
  """The records of a training run's `metrics.jsonl`; a workdir without one is a UserError."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    raise UserError(f'{path} does not exist; pass the --workdir of a training run')
  return read_metrics(path)


def _is_local(path: epath.Path) -> bool:
  return '://' not in str(path)


class JsonlWriter:
  """Keeps metric records in `metrics.jsonl`; needs neither TensorFlow nor CLU.

  A record once written is never lost. Locally the file is only appended to, at each flush (a
  checkpoint); a run resumed at step S redoes the steps after S, so their old records, and a line
  torn by a kill, are dropped first by writing the kept ones to a new file that then replaces the
  old in one rename. On object stores (gs://), which cannot append or rename, each flush rewrites
  the file whole; an object is replaced all at once or not at all.
  """

  def __init__(self, path: epath.PathLike, resume_step: int):
    self._path = epath.Path(path)
    self._append = _is_local(self._path)
    self._records, self._pending = [], []
    if self._path.exists():
      self._records = [r for r in read_metrics(self._path) if r.get('step', 0) <= resume_step]
    self._replace(self._records)

  def _replace(self, records: list[dict[str, Any]]) -> None:
    text = ''.join(json.dumps(r) + '\n' for r in records)
    if not self._append:
      self._path.write_text(text)
      return
    partial = self._path.with_name(self._path.name + '.partial')
    partial.write_text(text)
    os.replace(partial, self._path)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    by_split: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for name, value in scalars.items():
      split, _, metric = name.rpartition('/')
      by_split[split][metric] = float(value)
    self._pending.extend({'step': int(step), 'split': split, **values}
                         for split, values in by_split.items())

  def flush(self) -> None:
    if not self._pending:
      return
    if self._append:
      with self._path.open('a') as f:
        f.write(''.join(json.dumps(r) + '\n' for r in self._pending))
    else:  # Object stores rewrite the file whole, so they keep every record.
      self._records += self._pending
      self._replace(self._records)
    self._pending = []

  def close(self) -> None:
    self.flush()


class ConsoleWriter:
  """Scalars to the log, for runs where CLU (which needs TensorFlow) cannot be imported."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    logging.info('[%d] %s', step, ', '.join(f'{k}={float(v):.6g}' for k, v in scalars.items()))

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class MultiWriter:
  """Writes every record to each of `writers`."""

  def __init__(self, writers: list[Any]):
    self._writers = writers

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for w in self._writers:
      w.write_scalars(step, scalars)

  def flush(self) -> None:
    for w in self._writers:
      w.flush()

  def close(self) -> None:
    for w in self._writers:
      w.close()


def create_writer(workdir: epath.PathLike, resume_step: int, is_main: bool) -> MultiWriter:
  """TensorBoard, console and `metrics.jsonl` on the main process; console alone elsewhere.

  Without TensorFlow (the in-memory input path on an accelerator host), TensorBoard is skipped.
  """
  try:
    from clu import metric_writers  # imports TensorFlow  # pylint: disable=g-import-not-at-top
    console = metric_writers.create_default_writer(str(workdir), just_logging=not is_main)
  except ImportError as e:
    if is_main:
      logging.warning('No TensorBoard summaries (%s); writing metrics.jsonl and the console', e)
    console = ConsoleWriter()
  if not is_main:
    return MultiWriter([console])
  return MultiWriter([console, JsonlWriter(epath.Path(workdir) / METRICS_FILE, resume_step)])
