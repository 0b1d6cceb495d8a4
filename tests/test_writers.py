"""metrics.jsonl: what is flushed is kept, a resume drops the steps it redoes, a kill mid-write
loses nothing."""

import numpy as np
import pytest

from fer_flax.train import writers


def test_metrics_flushed_are_kept_and_a_resume_drops_the_steps_it_redoes(tmp_path):
  path = tmp_path / writers.METRICS_FILE
  writer = writers.JsonlWriter(path, resume_step=0)
  for step in (1, 2, 3):
    writer.write_scalars(step, {'train/loss': float(step)})
  writer.flush()
  writer.write_scalars(4, {'train/loss': 4.0})  # not flushed: lost with the process, as its step
  assert [r['step'] for r in writers.read_metrics(path)] == [1, 2, 3]
  resumed = writers.JsonlWriter(path, resume_step=2)
  resumed.write_scalars(3, {'train/loss': np.float32(3.5)})
  resumed.close()
  assert writers.read_metrics(path) == [{'step': 1, 'split': 'train', 'loss': 1.0},
                                        {'step': 2, 'split': 'train', 'loss': 2.0},
                                        {'step': 3, 'split': 'train', 'loss': 3.5}]


def test_metrics_kept_survive_a_kill_mid_write(tmp_path, monkeypatch):
  path = tmp_path / writers.METRICS_FILE
  writer = writers.JsonlWriter(path, resume_step=0)
  for step in (1, 2):
    writer.write_scalars(step, {'train/loss': float(step)})
  writer.flush()
  with path.open('a') as f:  # killed in the middle of appending step 3's record
    f.write('{"step": 3, "split": "tr')
  kept = [{'step': 1, 'split': 'train', 'loss': 1.0}, {'step': 2, 'split': 'train', 'loss': 2.0}]
  assert writers.read_metrics(path) == kept

  # Killed again while the resumed run rewrites the file: the old one is still whole.
  def killed(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(writers.os, 'replace', killed)
  with pytest.raises(KeyboardInterrupt):
    writers.JsonlWriter(path, resume_step=2)
  assert writers.read_metrics(path) == kept
  monkeypatch.undo()

  resumed = writers.JsonlWriter(path, resume_step=2)
  resumed.write_scalars(3, {'train/loss': 3.0})
  resumed.close()
  assert writers.read_metrics(path) == kept + [{'step': 3, 'split': 'train', 'loss': 3.0}]
  assert path.read_text().count('\n') == 3  # the torn line is gone, not glued to a new one
