"""Models that leave JAX: a TensorFlow SavedModel, a TFLite model and an ONNX model.

Every exported model takes uint8 faces [N, 48, 48, 1] (any N), as `predict` and the data set store
them, and returns 7 probabilities in FER2013's label order; the preprocessing is inside the model,
and `labels.txt` beside it names the classes. jax2tf, the JAX team's own path to TensorFlow's
formats, writes the SavedModel (the model as StableHLO in an `XlaCallModule` op, batch dimension
symbolic); TensorFlow's TFLite converter turns a copy written for one face into TFLite ops, which
are then given a free batch dimension (`_any_batch`), and tf2onnx turns the float TFLite model into
ONNX (tf2onnx cannot read `XlaCallModule`). Batch norm is folded into the convolution before it
first, so that the converters see convolution and bias only: the quantized model then rounds once
a layer, not after every step of the batch norm. The converters are imported here only
(`pip install -e '.[export]'`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from fer_flax import models
from fer_flax.core.errors import UserError
from fer_flax.core.padding import pad_rows
from fer_flax.data import fer2013
from fer_flax.models import inference, layers

FORMATS = ('savedmodel', 'tflite', 'onnx')
QUANTIZATIONS = ('none', 'float16', 'int8', 'dynamic')
LABELS_FILE = 'labels.txt'
TFLITE_FILE = 'model.tflite'
ONNX_FILE = 'model.onnx'
ONNX_OPSET = 17
_CALIBRATION_FACES = 256
_INSTALL = "pip install -e '.[export]'"


def logits_fn(config: ml_collections.ConfigDict,
              variables: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
  """uint8 faces [N, 48, 48, 1] -> [N, 7] logits: the model with its preprocessing."""
  model = models.create_model(config.model)
  return functools.partial(inference.logits, model.apply, variables)


def probabilities_fn(config: ml_collections.ConfigDict,
                     variables: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
  """uint8 faces [N, 48, 48, 1] -> [N, 7] probabilities, as the exported models give them."""
  logits = logits_fn(config, variables)
  return lambda images: jax.nn.softmax(logits(images))


def fold_batch_norm(variables: dict[str, Any]) -> dict[str, Any]:
  """Variables with each `BatchNorm_i` folded into `Conv_i`, the convolution it follows (and each
  `DenseNorm_i` into `Dense_i`).

  Every zoo model names them so, in the same module; `folded_logits_fn` runs the result. The
  kernel takes the batch norm's per-channel multiplier, and the batch norm keeps only a bias.
  """
  def fold(params, stats):
    params = dict(params)
    for name, value in params.items():
      if name.startswith(('BatchNorm_', 'DenseNorm_')):
        layer = name.replace('BatchNorm_', 'Conv_').replace('DenseNorm_', 'Dense_')
        weights = dict(params[layer])
        mean, var = np.asarray(stats[name]['mean']), np.asarray(stats[name]['var'])
        scale = np.asarray(value.get('scale', 1.0))  # none without a learned scale
        multiplier = scale / np.sqrt(var + layers.BatchNorm.epsilon)
        weights['kernel'] = np.asarray(weights['kernel']) * multiplier
        bias = np.asarray(weights.pop('bias', 0.0))
        params[name] = {'bias': np.asarray(value['bias']) + (bias - mean) * multiplier}
        params[layer] = weights
      elif name in stats:
        params[name] = fold(value, stats[name])
    return params

  return {'params': fold(variables['params'], variables.get('batch_stats', {}))}


def _bias_only_batch_norm(next_fun, args, kwargs, context):
  """A folded batch norm adds its bias: its statistics and scale are in the convolution."""
  if isinstance(context.module, layers.BatchNorm) and context.method_name == '__call__':
    (x,) = args
    return (x + context.module.get_variable('params', 'bias')).astype(context.module.dtype)
  return next_fun(*args, **kwargs)


def folded_logits_fn(config: ml_collections.ConfigDict,
                     variables: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
  """`logits_fn` with batch norm folded: what the exported models compute."""
  logits = logits_fn(config, fold_batch_norm(variables))

  def run(images: jax.Array) -> jax.Array:
    with nn.intercept_methods(_bias_only_batch_norm):
      return logits(images)

  return run


def _module(config: ml_collections.ConfigDict, variables: dict[str, Any], batch: int | None):
  """A tf.Module serving the model on [batch, 48, 48, 1] faces (any batch when None)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  size = fer2013.IMAGE_SIZE
  # The softmax is TensorFlow's own op, which TFLite quantizes safely (a quantized division by a
  # sum of exponentials can meet a zero).
  converted = jax2tf.convert(
      folded_logits_fn(config, variables), with_gradient=False,
      polymorphic_shapes=None if batch else [f'(b, {size}, {size}, 1)'])
  module = tf.Module()
  module.serve = tf.function(
      lambda images: {'probabilities': tf.nn.softmax(converted(images))}, autograph=False,
      input_signature=[tf.TensorSpec([batch, size, size, 1], tf.uint8, name='images')])
  return module


@contextlib.contextmanager
def _absl_level_kept():
  """TensorFlow's SavedModel writer sets absl's logger to WARNING; the caller's level comes back."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def _calibration_faces(data: str | None) -> Callable[[], Any]:
  """int8 calibration: training faces, one at a time, as the converter asks for them."""
  if not data:
    raise UserError('--quantize=int8 calibrates on training faces; pass --data=PATH/TO/fer2013.zip')
  images, _ = fer2013.load_split(fer2013.Source(data), 'train')
  chosen = images[np.random.default_rng(0).permutation(len(images))[:_CALIBRATION_FACES]]
  return lambda: ([face[None]] for face in chosen)


def _import(module: str):
  try:
    return __import__(module, fromlist=['_'])
  except ImportError as e:
    raise UserError(f'{module} is not installed; the exports need it: {_INSTALL}') from e


def _image_layer(float_model: bytes) -> list[str]:
  """The output tensors of the ops before the model's first CONV_2D: the preprocessing and the
  first convolution, which reads the one-channel image (TFLite makes it a DEPTHWISE_CONV_2D)."""
  tf = _import('tensorflow')
  interpreter = tf.lite.Interpreter(model_content=float_model)
  names = {t['index']: t['name'] for t in interpreter.get_tensor_details()}
  ops = interpreter._get_ops_details()  # pylint: disable=protected-access
  first = next((i for i, op in enumerate(ops) if op['op_name'] == 'CONV_2D'), 0)
  return [names[t] for op in ops[:first] for t in op['outputs']]


def _tflite(saved: pathlib.Path, quantize: str, data: str | None) -> bytes:
  tf = _import('tensorflow')
  converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
  image_layer = _image_layer(converter.convert()) if quantize == 'int8' else []
  if quantize != 'none':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantize == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == 'int8':
    # Integers throughout but for the layer that reads the image: of all the layers, rounding its
    # output changed the most faces' emotion (docs/deploy.md). Activation ranges: training faces.
    faces = _calibration_faces(data)
    converter.representative_dataset = faces
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=faces,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=image_layer))
    return debugger.get_nondebug_quantized_model()
  # 'dynamic': int8 weights; activations quantized per batch as the model runs.
  return converter.convert()


def _any_batch(model: bytes) -> bytes:
  """A TFLite model converted for one face, rewritten to take any number of faces.

  Converted for a symbolic batch, every bias add becomes a broadcast to the batch's shape that
  TFLite keeps as BROADCAST_TO + ADD: an extra int8 rounding a layer, and shape arithmetic that
  keeps XNNPACK off. Converted for one face, the bias folds into the convolution; TFLite's kernels
  size their outputs from their inputs, so only the RESHAPEs' target shapes and the tensors'
  shape signatures name the batch. Both get -1 there, and a run of 1 and of 3 faces proves it.
  """
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  flat = flatbuffer_utils.read_model_from_bytearray(model)
  graph, = flat.subgraphs

  def constant(tensor) -> bool:
    data = flat.buffers[tensor.buffer].data
    return data is not None and len(data) > 0

  for op in graph.operators:
    if flatbuffer_utils.opcode_to_name(flat, op.opcodeIndex) != 'RESHAPE':
      continue
    if len(op.inputs) > 1 and constant(graph.tensors[op.inputs[1]]):
      target = flat.buffers[graph.tensors[op.inputs[1]].buffer]
      shape = np.frombuffer(bytes(target.data), np.int32).copy()
      shape[0] = -1
      target.data = np.frombuffer(shape.tobytes(), np.uint8)
    new_shape = getattr(op.builtinOptions, 'newShape', None)
    if new_shape is not None and len(new_shape):
      new_shape[0] = -1
  for tensor in graph.tensors:
    shape = tensor.shape if tensor.shape is not None else ()
    if len(shape) and shape[0] == 1 and not constant(tensor):
      tensor.shapeSignature = np.concatenate([[-1], tensor.shape[1:]]).astype(np.int32)
  model = bytes(flatbuffer_utils.convert_object_to_bytearray(flat))
  _check_any_batch(model)
  return model


def _check_any_batch(model: bytes) -> None:
  """Three faces in one call give what each gives alone, or the export stops and says why."""
  interpreter = _import('ai_edge_litert.interpreter').Interpreter(model_content=model)
  size = fer2013.IMAGE_SIZE
  faces = np.random.default_rng(0).integers(0, 256, (3, size, size, 1), np.uint8)
  try:
    run = _litert_run(interpreter)
    together = run(faces)
    alone = np.concatenate([run(face[None]) for face in faces])
  except (RuntimeError, ValueError) as e:
    together, alone = str(e), None
  if alone is None or together.shape != alone.shape or not np.allclose(together, alone, atol=1e-5):
    raise UserError('this model\'s TFLite graph fixes the number of faces a call takes '
                    f'({together if alone is None else "batched answers differ"}); '
                    'export it for a fixed number with --batch=N')


def _onnx(tflite: pathlib.Path, path: pathlib.Path) -> None:
  """The float TFLite model in ONNX, its input and output named as the SavedModel names them."""
  onnx, tf2onnx = _import('onnx'), _import('tf2onnx.convert')
  logging.getLogger('tf2onnx').setLevel(logging.WARNING)
  proto, _ = tf2onnx.from_tflite(str(tflite), opset=ONNX_OPSET)
  names = {proto.graph.input[0].name: 'images', proto.graph.output[0].name: 'probabilities'}
  for value in (*proto.graph.input, *proto.graph.output):
    value.name = names[value.name]
  for node in proto.graph.node:
    node.input[:] = [names.get(n, n) for n in node.input]
    node.output[:] = [names.get(n, n) for n in node.output]
  onnx.helper.set_model_props(proto, {'labels': ','.join(fer2013.EMOTIONS)})
  onnx.checker.check_model(proto)
  onnx.save(proto, str(path))


def export_model(config: ml_collections.ConfigDict, variables: dict[str, Any], fmt: str,
                 out: str | pathlib.Path, quantize: str = 'none', data: str | None = None,
                 batch: int | None = None) -> pathlib.Path:
  """Writes the model in `fmt` under `out` (with `labels.txt`); returns the model's path.

  The model takes any number of faces, or exactly `batch`.
  """
  if fmt not in FORMATS:
    raise UserError(f'unknown format {fmt!r}; choose msgpack, {", ".join(FORMATS)}')
  if quantize != 'none' and fmt != 'tflite':
    raise UserError(f'--quantize={quantize} is for --format=tflite; {fmt} stays float32')
  tf = _import('tensorflow')
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / LABELS_FILE).write_text('\n'.join(fer2013.EMOTIONS) + '\n')
  with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
    # The converters run TensorFlow's own TFLite interpreter, which warns that LiteRT replaces it.
    warnings.filterwarnings('ignore', message='.*tf.lite.Interpreter is deprecated')
    saved = out if fmt == 'savedmodel' else pathlib.Path(scratch) / 'savedmodel'
    # TFLite (and ONNX, made from it) converts for one face, then takes any N: see `_any_batch`.
    module = _module(config, variables, batch if fmt == 'savedmodel' else batch or 1)
    with _absl_level_kept():
      tf.saved_model.save(module, str(saved), signatures={'serving_default': module.serve})
    if fmt == 'savedmodel':
      return saved
    model = _tflite(saved, quantize, data)
    tflite = out / TFLITE_FILE if fmt == 'tflite' else pathlib.Path(scratch) / TFLITE_FILE
    tflite.write_bytes(model if batch else _any_batch(model))
    if fmt == 'tflite':
      return tflite
    _onnx(tflite, out / ONNX_FILE)
    return out / ONNX_FILE


def _litert_run(interpreter: Any) -> Callable[[np.ndarray], np.ndarray]:
  """faces -> probabilities through a LiteRT interpreter; an any-N model is resized to each call."""
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
  any_n = inp['shape_signature'][0] == -1
  interpreter.allocate_tensors()

  def run(faces: np.ndarray) -> np.ndarray:
    if any_n:
      interpreter.resize_tensor_input(inp['index'], faces.shape)
      interpreter.allocate_tensors()
    interpreter.set_tensor(inp['index'], faces)
    interpreter.invoke()
    return interpreter.get_tensor(out['index'])

  return run


def _in_batches(run: Callable[[np.ndarray], np.ndarray],
                batch: int | None) -> Callable[[np.ndarray], np.ndarray]:
  """`run` on any number of faces, for a model exported with a fixed `batch` (zeros pad)."""
  if not batch:
    return run

  def run_all(faces: np.ndarray) -> np.ndarray:
    padded = pad_rows(faces, batch)
    return np.concatenate([run(padded[i:i + batch])
                           for i in range(0, len(padded), batch)])[:len(faces)]

  return run_all


def load(path: str | pathlib.Path) -> Callable[[np.ndarray], np.ndarray]:
  """A model this module exported, as a function of uint8 faces [N, 48, 48, 1] -> probabilities.

  `path` is a SavedModel folder, a `.tflite` or `.onnx` file, or a folder holding one; TensorFlow,
  LiteRT or onnxruntime runs it (no JAX). A model exported for a fixed batch takes any N here.
  """
  path = pathlib.Path(path)
  if path.is_dir() and (path / 'saved_model.pb').exists():
    tf = _import('tensorflow')
    serve = tf.saved_model.load(str(path)).signatures['serving_default']
    batch = serve.structured_input_signature[1]['images'].shape[0]
    return _in_batches(lambda faces: serve(images=tf.constant(faces))['probabilities'].numpy(),
                       batch)
  if path.is_dir():
    path = next((path / f for f in (TFLITE_FILE, ONNX_FILE) if (path / f).is_file()), path)
  if not path.is_file() or path.suffix not in ('.tflite', '.onnx'):
    raise UserError(f'{path}: no SavedModel, .tflite or .onnx model here; export one with '
                    'python -m fer_flax.export --format=savedmodel|tflite|onnx')
  if path.suffix == '.onnx':
    session = _import('onnxruntime').InferenceSession(str(path),
                                                      providers=['CPUExecutionProvider'])
    batch = session.get_inputs()[0].shape[0]
    return _in_batches(lambda faces: session.run(['probabilities'], {'images': faces})[0],
                       batch if isinstance(batch, int) else None)
  interpreter = _import('ai_edge_litert.interpreter').Interpreter(model_path=str(path),
                                                                  num_threads=os.cpu_count())
  batch = int(interpreter.get_input_details()[0]['shape_signature'][0])
  return _in_batches(_litert_run(interpreter), None if batch == -1 else batch)
