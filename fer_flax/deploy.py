"""Models that leave JAX: a TensorFlow SavedModel and a TFLite model, made by jax2tf.

Every exported model takes uint8 faces [N, 48, 48, 1] (any N), as `predict` and the data set store
them, and returns 7 probabilities in FER2013's label order; the preprocessing is inside the model,
and `labels.txt` beside it names the classes. jax2tf is the JAX team's own path to TensorFlow's
formats; it lowers the model to TensorFlow ops (not `XlaCallModule`), which the TFLite converter
takes. TensorFlow is imported here only.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from fer_flax import fer2013, in_memory, models
from fer_flax.errors import UserError

FORMATS = ('savedmodel', 'tflite')
QUANTIZATIONS = ('none', 'float16', 'int8')
LABELS_FILE = 'labels.txt'
TFLITE_FILE = 'model.tflite'
_CALIBRATION_FACES = 256


def logits_fn(config: ml_collections.ConfigDict,
              variables: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
  """uint8 faces [N, 48, 48, 1] -> [N, 7] logits: the model with its preprocessing."""
  model = models.create_model(config.model)
  return lambda images: model.apply(variables, models.preprocess(images), train=False)


def probabilities_fn(config: ml_collections.ConfigDict,
                     variables: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
  """uint8 faces [N, 48, 48, 1] -> [N, 7] probabilities, as the exported models give them."""
  logits = logits_fn(config, variables)
  return lambda images: jax.nn.softmax(logits(images))


def _module(config: ml_collections.ConfigDict, variables: dict[str, Any]):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  size = fer2013.IMAGE_SIZE
  # The softmax is TensorFlow's own op, which TFLite quantizes safely (a quantized division by a
  # sum of exponentials can meet a zero).
  converted = jax2tf.convert(logits_fn(config, variables),
                             polymorphic_shapes=[f'(b, {size}, {size}, 1)'],
                             with_gradient=False, native_serialization=False)
  module = tf.Module()
  module.serve = tf.function(
      lambda images: {'probabilities': tf.nn.softmax(converted(images))}, autograph=False,
      input_signature=[tf.TensorSpec([None, size, size, 1], tf.uint8, name='images')])
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
  images, _ = in_memory.load_split(fer2013.Source(data), 'train')
  chosen = images[np.random.default_rng(0).permutation(len(images))[:_CALIBRATION_FACES]]
  return lambda: ([face[None]] for face in chosen)


def export_model(config: ml_collections.ConfigDict, variables: dict[str, Any], fmt: str,
                 out: str | pathlib.Path, quantize: str = 'none',
                 data: str | None = None) -> pathlib.Path:
  """Writes the model in `fmt` under `out` (with `labels.txt`); returns the model's path."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if fmt not in FORMATS:
    raise UserError(f'unknown format {fmt!r}; choose msgpack, {", ".join(FORMATS)}')
  if quantize != 'none' and fmt != 'tflite':
    raise UserError(f'--quantize={quantize} is for --format=tflite; {fmt} stays float32')
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / LABELS_FILE).write_text('\n'.join(fer2013.EMOTIONS) + '\n')
  module = _module(config, variables)
  saved = out if fmt == 'savedmodel' else out / 'savedmodel'
  with _absl_level_kept():
    tf.saved_model.save(module, str(saved), signatures={'serving_default': module.serve})
  if fmt == 'savedmodel':
    return saved
  converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
  if quantize != 'none':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantize == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == 'int8':
    converter.representative_dataset = _calibration_faces(data)
  path = out / TFLITE_FILE
  path.write_bytes(converter.convert())
  return path


def load(path: str | pathlib.Path) -> Callable[[np.ndarray], np.ndarray]:
  """A model this module exported, as a function of uint8 faces [N, 48, 48, 1] -> probabilities.

  `path` is a SavedModel folder, a `.tflite` file, or a folder holding `model.tflite`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  if path.is_dir() and (path / 'saved_model.pb').exists():
    serve = tf.saved_model.load(str(path)).signatures['serving_default']
    return lambda faces: serve(images=tf.constant(faces))['probabilities'].numpy()
  if path.is_dir():
    path = path / TFLITE_FILE
  if not path.is_file():
    raise UserError(f'{path}: no SavedModel or TFLite model here; export one with '
                    'python -m fer_flax.export --format=savedmodel|tflite')
  interpreter = tf.lite.Interpreter(model_path=str(path))
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

  def run(faces: np.ndarray) -> np.ndarray:
    interpreter.resize_tensor_input(inp['index'], faces.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp['index'], faces)
    interpreter.invoke()
    return interpreter.get_tensor(out['index'])

  return run
