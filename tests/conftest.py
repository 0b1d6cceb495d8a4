"""The tests' shared fixtures: synthetic data, and one tiny run trained to the end. Helpers
that tests call live in `tests.helpers`."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest

from tests import helpers


@pytest.fixture(scope='session')
def small_archive(tmp_path_factory) -> pathlib.Path:
  """A zip with 20 train and 4 public-test images per class (140 + 28)."""
  path = tmp_path_factory.mktemp('data') / 'fer2013.zip'
  return helpers.write_zip(path, helpers.make_examples({'Training': 20, 'PublicTest': 4}))


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory, small_archive) -> pathlib.Path:
  """The small archive, prepared once into a TFDS data dir shared by the tests."""
  from fer_flax.data import tfds_builder  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp('tfds')
  tfds_builder.prepare(small_archive, str(data_dir))
  return data_dir


@pytest.fixture(scope='session')
def finished_run(tmp_path_factory, small_archive, tfds_dir):
  """A tiny run trained to the end: (config, workdir, final state). Tests must not change it."""
  from fer_flax.train import loop  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('run')
  config = helpers.tiny_config(small_archive, tfds_dir, num_epochs=5)
  state = loop.train_and_evaluate(config, str(workdir))
  return config, workdir, state



@pytest.fixture(scope='session')
def packed_run(finished_run, tmp_path_factory) -> pathlib.Path:
  """The tiny run packed in the package's own format, as `python -m fer_flax.export` packs it."""
  from fer_flax.serve import package  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp('packed')
  package.save(str(finished_run[1]), out)
  return out


@pytest.fixture(scope='session')
def packed_predictor(packed_run):
  """A Predictor of the packed tiny run, eight faces a batch."""
  from fer_flax.serve.predictor import Predictor  # pylint: disable=g-import-not-at-top
  return Predictor.pretrained(packed_run, batch_size=8)


@pytest.fixture(scope='session')
def served(tmp_path_factory):
  """`python -m fer_flax.serve --model=pretrained` on a free port: (its URL, the process)."""
  import urllib.request  # pylint: disable=g-import-not-at-top
  port = helpers.free_port()
  log = tmp_path_factory.mktemp('server') / 'server.log'
  with log.open('w') as out:
    process = subprocess.Popen(
        [sys.executable, '-m', 'fer_flax.serve', '--model=pretrained', f'--port={port}'],
        cwd=helpers.REPO, stdout=out, stderr=subprocess.STDOUT)
  url = f'http://127.0.0.1:{port}'
  deadline = time.monotonic() + 180
  while True:
    try:
      with urllib.request.urlopen(f'{url}/healthz', timeout=5):
        break
    except OSError:
      if process.poll() is not None or time.monotonic() > deadline:
        process.kill()
        pytest.fail(f'the server did not start: {log.read_text()[-3000:]}')
      time.sleep(0.5)
  yield url, process
  process.terminate()
  process.wait(timeout=30)
