"""Exports that leave JAX give the JAX model's answers: SavedModel, TFLite (float and quantized),
ONNX, and README's snippets that load them."""

import json
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from fer_flax import deploy, export, fer2013, in_memory, models
from fer_flax.errors import UserError
from tests import conftest


@pytest.fixture(scope='module')
def model(finished_run, tmp_path_factory):
  """(config, variables) of the tiny run, through the package format as users get it."""
  out = tmp_path_factory.mktemp('exported')
  export.export(str(finished_run[1]), out)
  config, variables, _ = export.load(out)
  return config, variables, out


def _with_batch_norm_statistics(name: str, **fields):
  """(config, variables) of a zoo model whose batch norms are far from the identity."""
  config = ml_collections.ConfigDict({'model': {'name': name, **fields}})
  variables = models.create_model(config.model).init(
      jax.random.key(0), np.zeros((1, 48, 48, 1), np.float32), train=False)
  rng = np.random.default_rng(0)
  ranges = {'mean': (-0.05, 0.05), 'var': (0.5, 2.0), 'scale': (0.5, 2.0), 'bias': (-0.1, 0.1)}

  def randomized(path, x):
    if 'BatchNorm' not in jax.tree_util.keystr(path):
      return x
    return rng.uniform(*ranges[path[-1].key], np.shape(x)).astype(np.float32)

  return config, jax.tree_util.tree_map_with_path(randomized, variables)


@pytest.fixture(scope='module')
def vgg():
  return _with_batch_norm_statistics('vgg', stages=((4,), (8, 8)), hidden=(16,))


# A small copy of every zoo model.
ZOO = [
    ('vgg', {'stages': ((4,), (8, 8)), 'hidden': (16,)}),
    ('resnet18', {'widths': (4, 8, 8, 8)}),
    ('compact', {'stem_width': 4, 'widths': (8, 8), 'strides': (1, 2)}),
    ('seed_cnn', {'features': (4, 8), 'hidden': 16}),
]


@pytest.mark.parametrize('name,fields', ZOO)
def test_folding_batch_norm_into_the_convolutions_keeps_every_models_answers(name, fields, faces):
  config, variables = _with_batch_norm_statistics(name, **fields)
  expected = jax.jit(deploy.logits_fn(config, variables))(faces)
  folded = jax.jit(deploy.folded_logits_fn(config, variables))(faces)
  np.testing.assert_allclose(folded, expected, rtol=1e-4, atol=1e-4)
  assert not np.allclose(expected, expected[:1])  # the faces do not all give one answer


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
  path = deploy.export_model(config, variables, 'tflite', tmp_path / 'batch_8', batch=8)
  np.testing.assert_allclose(deploy.load(path)(faces), expected, atol=1e-4)  # 28 = 3 x 8 + 4
  for quantize in ('float16', 'int8', 'dynamic'):
    path = deploy.export_model(config, variables, 'tflite', tmp_path / quantize, quantize,
                               data=str(small_archive))
    agree = (deploy.load(path)(faces).argmax(-1) == expected.argmax(-1)).mean()
    assert agree >= 0.99, quantize


@pytest.mark.parametrize('name,fields', ZOO)
def test_every_zoo_models_tflite_takes_any_number_of_faces(name, fields, faces, tmp_path):
  config, variables = _with_batch_norm_statistics(name, **fields)
  expected = np.asarray(jax.jit(deploy.probabilities_fn(config, variables))(faces))
  path = deploy.export_model(config, variables, 'tflite', tmp_path)
  (inp,) = Interpreter(model_path=str(path)).get_input_details()
  assert inp['shape_signature'].tolist() == [-1, 48, 48, 1]
  for batch in (faces, faces[:1], faces[:5]):
    np.testing.assert_allclose(deploy.load(path)(batch), expected[:len(batch)], atol=1e-4)


def test_a_tflite_graph_that_ties_the_batch_is_refused_with_the_fix(tmp_path):
  """A model whose answer for a face depends on the other faces cannot take any N."""
  @tf.function(input_signature=[tf.TensorSpec([1, 48, 48, 1], tf.uint8)])
  def centred(images):
    x = tf.reshape(tf.cast(images, tf.float32), [1, -1])
    return tf.nn.softmax((x - tf.reduce_mean(x, axis=0, keepdims=True))[:, :7])

  model = tf.lite.TFLiteConverter.from_concrete_functions(
      [centred.get_concrete_function()], centred).convert()
  with pytest.raises(UserError, match='export it for a fixed number with --batch=N'):
    deploy._any_batch(model)  # pylint: disable=protected-access


def test_onnx_names_its_input_and_output_and_equals_the_jax_model(model, vgg, faces, tmp_path):
  import onnx  # pylint: disable=g-import-not-at-top
  for name, (config, variables) in {'seed_cnn': model[:2], 'vgg': vgg}.items():
    expected = np.asarray(jax.jit(deploy.probabilities_fn(config, variables))(faces))
    path = deploy.export_model(config, variables, 'onnx', tmp_path / name)
    for batch in (faces, faces[:1]):
      np.testing.assert_allclose(deploy.load(path)(batch), expected[:len(batch)], atol=1e-4)
  proto = onnx.load(str(path))
  (inp,), (out,) = proto.graph.input, proto.graph.output
  assert (inp.name, out.name) == ('images', 'probabilities')
  assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
  assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [48, 48, 1]
  assert {p.key: p.value for p in proto.metadata_props}['labels'] == ','.join(fer2013.EMOTIONS)


def _readme_snippets() -> list[str]:
  """The Python blocks of README's "Deploy outside JAX" section."""
  readme = (conftest.REPO / 'README.md').read_text()
  section = readme.split('## Deploy outside JAX')[1].split('\n## ')[0]
  return re.findall(r'```python\n(.*?)```', section, re.S)


def test_readmes_deploy_snippets_run_and_give_the_jax_models_answers(model, faces, tmp_path):
  config, variables, _ = model
  expected = np.asarray(jax.jit(deploy.probabilities_fn(config, variables))(faces))
  for fmt in deploy.FORMATS:
    deploy.export_model(config, variables, fmt, tmp_path / f'fer_{fmt}')
  snippets = _readme_snippets()
  assert len(snippets) == 3
  for snippet in snippets:
    namespace = {'faces': faces}
    exec(snippet.replace('/tmp/', f'{tmp_path}/'), namespace)  # pylint: disable=exec-used
    np.testing.assert_allclose(namespace['probabilities'], expected, atol=1e-4)
    assert namespace['emotions'] == [fer2013.EMOTIONS[i] for i in expected.argmax(-1)]


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
