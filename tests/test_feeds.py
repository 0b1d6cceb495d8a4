"""Where batches come from: the input the config names, checked; training without TensorFlow."""

import subprocess
import sys

import pytest

from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Parallel
from fer_flax.data import feeds, fer2013
from fer_flax.train import writers
from tests import helpers


def test_training_runs_with_tensorflow_absent(tmp_path, small_archive):
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-m', 'tests.without_tensorflow', 'fer_flax.main',
       '--config=configs/tiny.py', f'--workdir={workdir}', f'--config.data.path={small_archive}',
       '--config.data.pipeline=memory', '--config.steps_per_call=4'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'LOADED []' in result.stdout
  records = writers.read_metrics(workdir / writers.METRICS_FILE)
  evals = [r for r in records if r['split'] == 'public_test']
  assert [r['step'] for r in evals] == [17, 34]  # an evaluation at the end of each epoch
  assert evals[-1]['accuracy'] > 0.5  # chance is 1/7
  assert (workdir / 'checkpoints' / '34').is_dir()
  assert 'public_test/accuracy=' in result.stderr  # the console writer stands in for CLU's


def test_input_choices_are_checked(small_archive):
  parallel = Parallel()
  with pytest.raises(UserError, match="unknown input pipeline 'grpc' in config.data.pipeline"):
    feeds.train_feed(helpers.memory_config(small_archive, **{'data.pipeline': 'grpc'}), parallel)
  with pytest.raises(UserError, match='steps_per_call=4 needs the in-memory input'):
    config = helpers.memory_config(small_archive, steps_per_call=4, **{'data.pipeline': 'tfds'})
    feeds.train_feed(config, parallel)
  tfds_flips = {'data.pipeline': 'tfds', 'augment.alternate_flips': True}
  with pytest.raises(UserError, match='alternate_flips needs the in-memory input'):
    flipped = helpers.memory_config(small_archive, **tfds_flips, **{'augment.flip': True})
    feeds.check_settings(flipped)
  # Without flips there is nothing to alternate: the setting is inert, not refused.
  feeds.check_settings(helpers.memory_config(small_archive, **tfds_flips))
  with pytest.raises(UserError, match="split 'private_test' is not in .*choose one of those"):
    fer2013.load_split(fer2013.Source(small_archive), 'private_test')
