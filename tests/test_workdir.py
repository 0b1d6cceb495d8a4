"""Workdir files go through epath, so a gs:// workdir gets them as a local one does."""

import contextlib
import json
from unittest import mock

import numpy as np
import pytest
from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing

from configs import tiny
from fer_flax import plots, workdirs, writers


@contextlib.contextmanager
def _bucket_in(local_root):
  """gs://bucket/... served from `local_root`, as the epath backend for gs:// paths."""

  def local(fn, path, *args, **kwargs):
    return fn(str(path).replace('gs://bucket', str(local_root)), *args, **kwargs)

  names = ('exists', 'glob', 'isdir', 'listdir', 'makedirs', 'mkdir', 'open', 'remove', 'rmtree',
           'stat', 'walk')
  # mock_epath replaces the backends of its table, which epath skips for TensorFlow's own
  # when TensorFlow is installed: so it is made to look absent.
  with epath_testing.mock_epath(**{name: local for name in names}), mock.patch.object(
      gpath, '_is_tf_installed', lambda: False):
    yield


def test_config_metrics_and_plots_of_a_gs_workdir(tmp_path):
  workdir = 'gs://bucket/runs/a'
  assert str(workdirs.workdir_path(workdir)) == workdir  # not made 'gs:/bucket/...'
  config = tiny.get_config()
  with _bucket_in(tmp_path):
    epath.Path(workdir).mkdir(parents=True)
    workdirs.check_or_save_config(config, workdir, resuming=False)
    assert json.loads(workdirs.load_config(workdir).to_json()) == json.loads(config.to_json())
    writer = writers.JsonlWriter(epath.Path(workdir) / writers.METRICS_FILE, resume_step=0)
    writer.write_scalars(5, {'train/loss': 1.5, 'public_test/accuracy': 0.25})
    writer.close()
    records = writers.read_metrics(f'{workdir}/{writers.METRICS_FILE}')
    png = plots.curves_png(records, f'{workdir}/eval/curves.png')
  local = tmp_path / 'runs' / 'a'
  assert json.loads((local / workdirs.CONFIG_FILE).read_text())['batch_size'] == config.batch_size
  assert records == [{'step': 5, 'split': 'train', 'loss': 1.5},
                     {'step': 5, 'split': 'public_test', 'accuracy': 0.25}]
  assert (local / 'eval' / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert str(png) == f'{workdir}/eval/curves.png'


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
