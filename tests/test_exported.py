"""Exports that leave JAX give the JAX model's answers: SavedModel, TFLite (float and quantized),
ONNX, and docs/deploy.md's snippets that load them."""

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

from fer_flax import models
from fer_flax.core.errors import UserError
from fer_flax.data import fer2013
from fer_flax.serve import exported, package
from tests import helpers


@pytest.fixture(scope='module')
def packed_model(packed_run):
  """(config, variables, folder) of the tiny run, through the package format as users get it."""
  config, variables, _ = package.load(packed_run)
  return config, variables, packed_run


def _with_batch_norm_statistics(name: str, **fields):
  """(config, variables) of a zoo model whose batch norms are far from the identity."""
  config = ml_collections.ConfigDict({'model': {'name': name, **fields}})
  variables = models.create_model(config.model).init(
      jax.random.key(0), np.zeros((1, 48, 48, 1), np.float32), train=False)
  rng = np.random.default_rng(0)
  ranges = {'mean': (-0.05, 0.05), 'var': (0.5, 2.0), 'scale': (0.5, 2.0), 'bias': (-0.1, 0.1)}

  def randomized(path, x):
    if 'PatchWhitening' in jax.tree_util.keystr(path):
      return rng.normal(size=np.shape(x)).astype(np.float32)
    if 'Norm' not in jax.tree_util.keystr(path):
      return x
    return rng.uniform(*ranges[path[-1].key], np.shape(x)).astype(np.float32)

  return config, jax.tree_util.tree_map_with_path(randomized, variables)


@pytest.fixture(scope='module')
def vgg():
  return _with_batch_norm_statistics('vgg', stages=((4,), (8, 8)), hidden=(16,))


# A small copy of every zoo model.
ZOO = [
    ('vgg', {'stages': ((4,), (8, 8)), 'hidden': (16,)}),
    ('vgg', {'stages': ((4,), (8, 8)), 'hidden': (16,), 'whiten': 2, 'dirac_init': True,
             'norm_scale': False, 'head_norm': True}),
    ('resnet18', {'widths': (4, 8, 8, 8)}),
    ('compact', {'stem_width': 4, 'widths': (8, 8), 'strides': (1, 2)}),
    ('seed_cnn', {'features': (4, 8), 'hidden': 16}),
]


@pytest.mark.parametrize('name,fields', ZOO)
def test_folding_batch_norm_into_the_convolutions_keeps_every_models_answers(name, fields, faces):
  config, variables = _with_batch_norm_statistics(name, **fields)
  expected = jax.jit(exported.logits_fn(config, variables))(faces)
  folded = jax.jit(exported.folded_logits_fn(config, variables))(faces)
  np.testing.assert_allclose(folded, expected, rtol=1e-4, atol=1e-4)
  assert not np.allclose(expected, expected[:1])  # the faces do not all give one answer


@pytest.fixture(scope='module')
def faces(small_archive):
  images, _ = fer2013.load_split(fer2013.Source(small_archive), 'public_test')
  return images  # 28 faces, uint8 [N, 48, 48, 1]


def test_savedmodel_serves_uint8_faces_and_equals_the_jax_model(packed_model, faces, tmp_path):
  config, variables, _ = packed_model
  expected = np.asarray(jax.jit(exported.probabilities_fn(config, variables))(faces))
  path = exported.export_model(config, variables, 'savedmodel', tmp_path / 'sm')
  serve = tf.saved_model.load(str(path)).signatures['serving_default']
  (spec,) = serve.structured_input_signature[1].values()
  assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 48, 48, 1]
  for batch in (faces, faces[:1]):  # any N
    got = serve(images=tf.constant(batch))['probabilities'].numpy()
    np.testing.assert_allclose(got, expected[:len(batch)], atol=1e-4)
  assert (path / exported.LABELS_FILE).read_text().split() == list(fer2013.EMOTIONS)


def test_tflite_equals_the_jax_model_and_quantized_ones_agree_on_the_emotion(packed_model, faces,
                                                                            small_archive,
                                                                            tmp_path):
  config, variables, _ = packed_model
  expected = np.asarray(jax.jit(exported.probabilities_fn(config, variables))(faces))
  path = exported.export_model(config, variables, 'tflite', tmp_path / 'float')
  for batch in (faces, faces[:1]):
    np.testing.assert_allclose(exported.load(path)(batch), expected[:len(batch)], atol=1e-4)
  path = exported.export_model(config, variables, 'tflite', tmp_path / 'batch_8', batch=8)
  np.testing.assert_allclose(exported.load(path)(faces), expected, atol=1e-4)  # 28 = 3 x 8 + 4
  for quantize in ('float16', 'int8', 'dynamic'):
    path = exported.export_model(config, variables, 'tflite', tmp_path / quantize, quantize,
                               data=str(small_archive))
    agree = (exported.load(path)(faces).argmax(-1) == expected.argmax(-1)).mean()
    assert agree >= 0.99, quantize


@pytest.mark.parametrize('name,fields', ZOO)
def test_every_zoo_models_tflite_takes_any_number_of_faces(name, fields, faces, tmp_path):
  config, variables = _with_batch_norm_statistics(name, **fields)
  expected = np.asarray(jax.jit(exported.probabilities_fn(config, variables))(faces))
  path = exported.export_model(config, variables, 'tflite', tmp_path)
  (inp,) = Interpreter(model_path=str(path)).get_input_details()
  assert inp['shape_signature'].tolist() == [-1, 48, 48, 1]
  for batch in (faces, faces[:1], faces[:5]):
    np.testing.assert_allclose(exported.load(path)(batch), expected[:len(batch)], atol=1e-4)


def test_a_tflite_graph_that_ties_the_batch_is_refused_with_the_fix(tmp_path):
  """A model whose answer for a face depends on the other faces cannot take any N."""
  @tf.function(input_signature=[tf.TensorSpec([1, 48, 48, 1], tf.uint8)])
  def centred(images):
    x = tf.reshape(tf.cast(images, tf.float32), [1, -1])
    return tf.nn.softmax((x - tf.reduce_mean(x, axis=0, keepdims=True))[:, :7])

  model = tf.lite.TFLiteConverter.from_concrete_functions(
      [centred.get_concrete_function()], centred).convert()
  with pytest.raises(UserError, match='export it for a fixed number with --batch=N'):
    exported._any_batch(model)  # pylint: disable=protected-access


def test_onnx_names_its_input_and_output_and_equals_the_jax_model(packed_model, vgg, faces,
                                                                  tmp_path):
  import onnx  # pylint: disable=g-import-not-at-top
  for name, (config, variables) in {'seed_cnn': packed_model[:2], 'vgg': vgg}.items():
    expected = np.asarray(jax.jit(exported.probabilities_fn(config, variables))(faces))
    path = exported.export_model(config, variables, 'onnx', tmp_path / name)
    for batch in (faces, faces[:1]):
      np.testing.assert_allclose(exported.load(path)(batch), expected[:len(batch)], atol=1e-4)
  proto = onnx.load(str(path))
  (inp,), (out,) = proto.graph.input, proto.graph.output
  assert (inp.name, out.name) == ('images', 'probabilities')
  assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
  assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [48, 48, 1]
  assert {p.key: p.value for p in proto.metadata_props}['labels'] == ','.join(fer2013.EMOTIONS)


def _deploy_snippets() -> list[str]:
  """The Python blocks of docs/deploy.md."""
  page = (helpers.REPO / 'docs' / 'deploy.md').read_text()
  return re.findall(r'```python\n(.*?)```', page, re.S)


def test_the_deploy_pages_snippets_run_and_give_the_jax_models_answers(packed_model, faces,
                                                                       tmp_path):
  config, variables, _ = packed_model
  expected = np.asarray(jax.jit(exported.probabilities_fn(config, variables))(faces))
  for fmt in exported.FORMATS:
    exported.export_model(config, variables, fmt, tmp_path / f'fer_{fmt}')
  snippets = _deploy_snippets()
  assert len(snippets) == 3
  for snippet in snippets:
    namespace = {'faces': faces}
    exec(snippet.replace('/tmp/', f'{tmp_path}/'), namespace)  # pylint: disable=exec-used
    np.testing.assert_allclose(namespace['probabilities'], expected, atol=1e-4)
    assert namespace['emotions'] == [fer2013.EMOTIONS[i] for i in expected.argmax(-1)]


def test_evaluate_scores_an_exported_model_as_it_scores_the_jax_one(packed_model, small_archive,
                                                                    tmp_path):
  from fer_flax import evaluate  # pylint: disable=g-import-not-at-top
  from fer_flax.serve import loading  # pylint: disable=g-import-not-at-top
  config, variables, folder = packed_model
  path = exported.export_model(config, variables, 'tflite', tmp_path / 'float')
  out = tmp_path / 'report.json'
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.evaluate', f'--exported={path}', f'--data={small_archive}',
       f'--json={out}'], cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(out.read_text())
  jax_report = evaluate.evaluate_model(loading.load_model(str(folder)), 'public_test',
                                       data=str(small_archive), pipeline='memory')
  assert report['examples'] == 28 and report['accuracy'] == jax_report['accuracy']
  assert report['loss'] == pytest.approx(jax_report['loss'], rel=1e-4)
