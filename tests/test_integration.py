"""Brief training on the real FER2013 archive in ../shared beats the majority-class guess by far."""

import os

import pytest

from fer_flax.train import loop, writers
from tests import helpers

pytestmark = pytest.mark.integration


@pytest.fixture(scope='module')
def archive():
  if not helpers.SHARED_ARCHIVE.exists():
    if os.environ.get('CI'):
      pytest.fail(f'{helpers.SHARED_ARCHIVE} is missing; CI must provide ../shared')
    pytest.skip(f'{helpers.SHARED_ARCHIVE} not found')
  return helpers.SHARED_ARCHIVE


def test_one_epoch_on_fer2013_beats_majority_class(archive, tmp_path):
  from configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  config.data.path = str(archive)
  config.data.tfds_data_dir = str(tmp_path / 'tfds')
  config.model.features = (32, 64)  # a narrower seed_cnn keeps this test near a minute
  config.model.hidden = 256
  config.num_epochs = 1
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  evals = [r for r in writers.read_metrics(tmp_path / 'run' / writers.METRICS_FILE)
           if r['split'] == 'public_test']
  # 895 of the 3,589 public_test faces are happy: a majority-class guess scores 24.9%.
  assert evals[-1]['accuracy'] > 0.35, evals
