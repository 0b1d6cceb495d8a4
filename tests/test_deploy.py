"""Exports that leave JAX give the JAX model's answers: SavedModel, TFLite float and quantized."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from fer_flax import deploy, export, fer2013, in_memory
from tests import conftest


@pytest.fixture(scope='module')
def model(finished_run, tmp_path_factory):
  """(config, variables) of the tiny run, through the package format as users get it."""
  out = tmp_path_factory.mktemp('exported')
  export.export(str(finished_run[1]), out)
  config, variables, _ = export.load(out)
  return config, variables, out


@pytest.fixture(scope='module')
def faces(small_archive):
  images, _ = in_memory.load_split(fer2013.Source(small_archive), 'public_test')
  return images  # 28 faces, uint8 [N, 48, 48, 1]


def test_savedmodel_serves_uint8_faces_and_equals_the_jax_model(model, faces, tmp_path):
  config, variables, _ = model
  expected = np.asarray(jax.jit(deploy.probabilities_fn(config, variables))(faces))
  path = deploy.export_model(config, variables, 'savedmodel', tmp_path / 'sm')
  serve = tf.saved_model.load(str(path)).signatures['serving_default']
  (spec,) = serve.structured_input_signature[1].values()
  assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 48, 48, 1]
  for batch in (faces, faces[:1]):  # any N
    got = serve(images=tf.constant(batch))['probabilities'].numpy()
    np.testing.assert_allclose(got, expected[:len(batch)], atol=1e-4)
  assert (path / deploy.LABELS_FILE).read_text().split() == list(fer2013.EMOTIONS)


def test_tflite_equals_the_jax_model_and_quantized_ones_agree_on_the_emotion(model, faces,
                                                                            small_archive,
                                                                            tmp_path):
  config, variables, _ = model
  expected = np.asarray(jax.jit(deploy.probabilities_fn(config, variables))(faces))
  path = deploy.export_model(config, variables, 'tflite', tmp_path / 'float')
  for batch in (faces, faces[:1]):
    np.testing.assert_allclose(deploy.load(path)(batch), expected[:len(batch)], atol=1e-4)
  for quantize in ('float16', 'int8'):
    path = deploy.export_model(config, variables, 'tflite', tmp_path / quantize, quantize,
                               data=str(small_archive))
    agree = (deploy.load(path)(faces).argmax(-1) == expected.argmax(-1)).mean()
    assert agree >= 0.99, quantize


def test_the_cli_exports_the_shipped_model_and_asks_for_what_it_needs(model, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.export', f'--model={model[2]}', '--format=tflite',
       f'--out={tmp_path / "out"}'], cwd=conftest.REPO, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert (tmp_path / 'out' / deploy.TFLITE_FILE).stat().st_size > 1000
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.export', '--model=pretrained', '--format=tflite',
       '--quantize=int8', f'--out={tmp_path / "int8"}'], cwd=conftest.REPO, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'fer_flax: error: --quantize=int8 calibrates on training faces; pass '
      '--data=PATH/TO/fer2013.zip')


def test_evaluate_scores_an_exported_model_as_it_scores_the_jax_one(model, small_archive,
                                                                    tmp_path):
  from fer_flax import evaluate  # pylint: disable=g-import-not-at-top
  config, variables, folder = model
  path = deploy.export_model(config, variables, 'tflite', tmp_path / 'float')
  out = tmp_path / 'report.json'
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.evaluate', f'--exported={path}', f'--data={small_archive}',
       f'--json={out}'], cwd=conftest.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(out.read_text())
  jax_report = evaluate.evaluate_exported(folder, 'public_test', data=str(small_archive),
                                          pipeline='memory')
  assert report['examples'] == 28 and report['accuracy'] == jax_report['accuracy']
  assert report['loss'] == pytest.approx(jax_report['loss'], rel=1e-4)
