"""Workdir files go through epath, so a gs:// workdir gets them as a local one does; a saved
config guards the run it belongs to."""

import contextlib
import json
from unittest import mock

import ml_collections
import pytest
from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing

from configs import tiny
from fer_flax import plots
from fer_flax.core.errors import UserError
from fer_flax.train import workdirs, writers


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


def test_a_run_saved_before_a_model_field_existed_resumes_only_at_its_default(tmp_path):
  # A VGG run from before `whiten` existed was built without whitening: resuming it with the
  # field at its architecture's default goes on; with whitening on it is refused in one line.
  config = tiny.get_config()
  config.model = ml_collections.ConfigDict({'name': 'vgg', 'stages': ((4,),), 'hidden': (8,)})
  workdirs.check_or_save_config(config, tmp_path, resuming=False)
  config.model.whiten = 0
  workdirs.check_or_save_config(config, tmp_path, resuming=True)
  config.model.whiten = 2
  with pytest.raises(UserError, match=r'different config \(model.whiten: 0 -> 2\)'):
    workdirs.check_or_save_config(config, tmp_path, resuming=True)
