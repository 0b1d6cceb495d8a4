"""The one model loader: a package folder or a run's checkpoint, and one-line errors."""

import numpy as np
import pytest

from fer_flax.core.errors import UserError
from fer_flax.serve import loading, package


def test_the_shipped_model_loads_by_name():
  loaded = loading.load_model('pretrained')
  assert loaded.source == str(package.PRETRAINED_DIR) and loaded.step > 0
  assert loaded.config.model.name and loaded.variables['params']
  assert loaded.accuracy == pytest.approx(0.6918, abs=1e-4)  # model.json's measurement


def test_a_checkpoint_and_its_package_load_the_same_model(finished_run, tmp_path):
  _, workdir, _ = finished_run
  from_run = loading.load_model(workdir=str(workdir))
  package.save(str(workdir), tmp_path / 'pkg')
  packed = loading.load_model(str(tmp_path / 'pkg'))
  assert packed.step == from_run.step and packed.config.to_dict() == from_run.config.to_dict()
  assert packed.accuracy == from_run.accuracy and 0 < from_run.accuracy <= 1
  np.testing.assert_allclose(packed.variables['params']['Dense_0']['kernel'],
                             from_run.variables['params']['Dense_0']['kernel'], atol=1e-3)


@pytest.mark.parametrize('model,workdir,step,message', [
    (None, None, None, 'give exactly one of --model'),
    ('pretrained', '/tmp/run', None, 'give exactly one of --model'),
    ('pretrained', None, 5, '--step picks a checkpoint of a training run'),
])
def test_one_source_is_asked_for(model, workdir, step, message):
  with pytest.raises(UserError, match=message):
    loading.load_model(model, workdir, step)


def test_a_folder_without_a_model_is_named_with_the_fix(tmp_path):
  with pytest.raises(UserError, match=r'holds no model \(model.json and model.msgpack missing\): '
                                      r'pass --model=pretrained, or a folder written by'):
    loading.load_model(str(tmp_path))
