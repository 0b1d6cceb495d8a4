"""Emotions of the faces in ordinary photos, videos and cameras: detect, crop, classify.
No TensorFlow.

  predictor = fer_flax.Predictor.pretrained()
  faces = predictor.predict('photo.jpg')   # or a PIL image or a numpy array
"""

from __future__ import annotations

import functools
import io
import os
import pathlib
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_flax import models
from fer_flax.core.errors import ImageError, UserError
from fer_flax.core.padding import pad_rows
from fer_flax.data import augment, fer2013, images
from fer_flax.models import inference
from fer_flax.serve import faces, loading, package, video
from fer_flax.serve.results import Face, Result, annotate, make_face

# The largest photo opened, in pixels: a 100-megapixel camera's.
MAX_PIXELS = 100_000_000
# Each face averaged with its mirror, the test-time augmentation docs/predict.md measured worth
# its cost; evaluate's headline figures stay single view.
DEFAULT_TTA = 'flip'
# Annotated photos wait, decoded, for their faces' batch: at most this many at a time.
_MAX_PENDING_ANNOTATIONS = 8


def open_image(source: Any, max_pixels: int = MAX_PIXELS, name: str | None = None
               ) -> Image.Image:
  """A PIL image from a path, bytes, a PIL image or an array; raises ImageError, naming it
  `name` (default: its path), when unusable or over `max_pixels` (read from its header, before
  its pixels are decoded)."""
  if isinstance(source, Image.Image):
    return ImageOps.exif_transpose(source)
  if isinstance(source, np.ndarray):
    return Image.fromarray(source)
  name = name or ('the photo' if isinstance(source, bytes) else str(source))
  too_large = ImageError(f'{name}: over {max_pixels / 1e6:g} megapixels; shrink it', 'too large')
  try:
    data = source if isinstance(source, bytes) else pathlib.Path(source).read_bytes()
    with warnings.catch_warnings():  # Our own limit speaks instead of PIL's warning.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(data))
    if image.width * image.height > max_pixels:
      raise too_large
    image.load()
  except FileNotFoundError:
    raise UserError(f'{name}: no such file') from None
  except IsADirectoryError:
    raise UserError(f'{name}: is a folder') from None
  except UnidentifiedImageError:
    raise ImageError(f'{name}: not an image', 'not an image') from None
  except Image.DecompressionBombError:
    raise too_large from None
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageError(f'{name}: unreadable or truncated image ({e})', 'unreadable') from None
  return ImageOps.exif_transpose(image)


class Predictor:
  """Classifies faces with a trained model; finds them first unless `detect` is False. `tta`
  (`augment.TTA_MODES`) averages each face's mirrored or shifted views, at that many times the
  model's work; 'none' gives the single view evaluate scores. Threads may share one: each gets its
  own detector."""

  def __init__(self, model: Any, variables: dict[str, Any], *, detect: bool = True,
               detector: str = 'yunet', align: bool = True, margin: float = 0.0,
               min_face_size: int = 0, batch_size: int = 64, tta: str = DEFAULT_TTA):
    augment.check_tta(tta)
    self._variables = jax.device_put(variables)
    self.detect_faces = detect
    self.align = align
    self.margin = margin
    self.batch_size = batch_size
    self._apply = jax.jit(functools.partial(inference.probabilities, model.apply, tta=tta))
    self._new_detector = functools.partial(faces.create_detector, detector,
                                           min_face_size=min_face_size)
    self._local = threading.local()
    self._local.detector = self._new_detector()  # Here, so that a missing model fails here.

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, step: int | None = None,
                   **kwargs: Any) -> Predictor:
    """The best checkpoint of a training run (or `step`)."""
    return cls.load(workdir=str(workdir), step=step, **kwargs)

  @classmethod
  def pretrained(cls, directory: str | os.PathLike = package.PRETRAINED_DIR,
                 **kwargs: Any) -> Predictor:
    """The model shipped inside the package, or one written by `python -m fer_flax.export`."""
    return cls.load(model=str(directory), **kwargs)

  @classmethod
  def load(cls, model: str | None = None, workdir: str | None = None, step: int | None = None,
           **kwargs: Any) -> Predictor:
    """From `model` ("pretrained" or an exported folder; the default) or from a training run's
    `workdir`."""
    return cls.from_loaded(loading.load_model(
        'pretrained' if model is None and workdir is None else model, workdir, step), **kwargs)

  @classmethod
  def from_loaded(cls, loaded: loading.LoadedModel, **kwargs: Any) -> Predictor:
    """The model `loading.load_model` loaded."""
    return cls(models.create_model(loaded.config.model), loaded.variables, **kwargs)

  @property
  def _detector(self) -> faces.YuNet | faces.Haar:
    """This thread's detector (OpenCV's are not safe to share between threads)."""
    if not hasattr(self._local, 'detector'):
      self._local.detector = self._new_detector()
    return self._local.detector

  def detect(self, image: Image.Image) -> list[faces.Detection]:
    """The faces of a photo (boxes, scores, landmarks), largest first, found in colour."""
    return self._detector.detect(np.asarray(images.rgb(image)))

  def faces_of(self, image: Image.Image, detect: bool | None = None
               ) -> tuple[list[faces.Detection | None], list[np.ndarray]]:
    """(detections, 48x48 crops) of an image: every detected face, or the whole image when
    `detect` (default: the predictor's) is False."""
    if not (self.detect_faces if detect is None else detect):
      return [None], [images.to_model_input(image)]
    detections = self.detect(image)
    gray = np.asarray(images.grayscale(image))  # Once for all the crops.
    return detections, [faces.crop(gray, d, self._detector.name, self.align, self.margin)
                        for d in detections]

  def padded_size(self, num_faces: int) -> int:
    """The batch `num_faces` faces are padded to: the next power of two up to `batch_size`, so
    that one face costs a batch of one, and a few shapes are ever compiled."""
    size = 1
    while size < min(num_faces, self.batch_size):
      size *= 2
    return min(size, self.batch_size)

  def warm_up(self) -> None:
    """Compiles the model for every batch `classify` may pad to, before the first face waits."""
    for size in sorted({self.padded_size(n) for n in range(1, self.batch_size + 1)}):
      self.classify(np.zeros((size, fer2013.IMAGE_SIZE, fer2013.IMAGE_SIZE), np.uint8))

  def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
    """[N, 7] probabilities of 48x48 uint8 faces, in batches of at most `batch_size`."""
    out = []
    for start in range(0, len(crops), self.batch_size):
      chunk = np.stack(crops[start:start + self.batch_size])[..., None]
      padded = pad_rows(chunk, self.padded_size(len(chunk)))
      out.append(np.asarray(self._apply(self._variables, padded))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, fer2013.NUM_CLASSES), np.float32)

  def predict_video(self, source: str | os.PathLike | int, fps: float = 5.0,
                    smooth: float = 0.0) -> Iterator[Result]:
    """A Result per sampled frame of a video file (or camera index) that shows faces; faces
    carry track ids, and `smooth` seconds average each track's probabilities."""
    return video.predict_video(self, source if isinstance(source, int) else str(source), fps,
                               smooth)

  def predict(self, image: Any) -> list[Face]:
    """The faces of one photo (a path, bytes, PIL image or array), largest first."""
    detections, crops = self.faces_of(open_image(image))
    return [make_face(d, p) for d, p in zip(detections, self.classify(crops), strict=True)]


def expand_inputs(paths: Iterable[str]) -> Iterator[pathlib.Path]:
  """Files as given, and every file under each given folder (sorted, hidden ones skipped)."""
  for path in map(pathlib.Path, paths):
    if path.is_dir():
      for child in sorted(path.rglob('*')):
        if child.is_file() and not any(p.startswith('.') for p in child.relative_to(path).parts):
          yield child
    else:
      yield path


def predict_files(predictor: Predictor, files: Iterable[pathlib.Path],
                  annotate_dir: pathlib.Path | None = None, fps: float = 5.0,
                  smooth: float = 0.0) -> Iterator[Result]:
  """Results file by file (frame by frame for videos); faces of several photos share a batch,
  so memory stays flat."""
  pending: list[tuple[pathlib.Path, Image.Image | None, list, list]] = []
  num_crops = 0

  def flush() -> Iterator[Result]:
    probabilities = iter(predictor.classify([c for _, _, _, crops in pending for c in crops]))
    for path, image, detections, _ in pending:
      found = [make_face(d, next(probabilities)) for d in detections]
      if annotate_dir is not None:
        # Crisp labels: no chroma subsampling, which smears thin coloured lines.
        annotate(image, found).save(_annotation_path(annotate_dir, path), quality=92,
                                    subsampling=0)
      yield Result(str(path), found)

  for path in files:
    if video.is_video(path):
      yield from flush()
      pending, num_crops = [], 0
      annotated = (None if annotate_dir is None
                   else _annotation_path(annotate_dir, path).with_suffix('.mp4'))
      yield from video.predict_video(predictor, str(path), fps, smooth, annotated)
      continue
    try:
      image = open_image(path)
      detections, crops = predictor.faces_of(image)
    except UserError as e:
      yield Result(str(path), [], str(e))
      continue
    if not crops:
      yield Result(str(path), [], f'{path}: no face found (for photos that are already cropped '
                                  'faces, pass --nodetect)')
      continue
    pending.append((path, image if annotate_dir is not None else None, detections, crops))
    num_crops += len(crops)
    if (num_crops >= predictor.batch_size
        or (annotate_dir is not None and len(pending) >= _MAX_PENDING_ANNOTATIONS)):
      yield from flush()
      pending, num_crops = [], 0
  yield from flush()


def _annotation_path(directory: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
  directory.mkdir(parents=True, exist_ok=True)
  out = directory / f'{path.stem}.jpg'
  n = 1
  while out.exists():
    out = directory / f'{path.stem}-{n}.jpg'
    n += 1
  return out
