"""Emotions of the faces in ordinary photos: detect, crop, classify. No TensorFlow needed.

  python -m fer_flax.predict --model=pretrained PHOTO_OR_FOLDER ...
  python -m fer_flax.predict --workdir=DIR [--step=N] PHOTO_OR_FOLDER ...
  python -m fer_flax.predict --model=EXPORTED_DIR PHOTO_OR_FOLDER ...
      [--no-detect] [--json | --csv] [--annotate=DIR]

Each face gets its file, box, emotion, confidence and all seven probabilities. A file that cannot be
used (not an image, truncated, no face) is reported and the rest still run; the exit status is 1
if any file failed, 0 otherwise. From Python:

  predictor = fer_flax.Predictor.pretrained()
  faces = predictor.predict('photo.jpg')   # or a PIL image or a numpy array
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import pathlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import cv2
import jax
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from fer_flax import export, fer2013, models, workdirs
from fer_flax.errors import UserError, exits_on_user_error

# FER2013 faces are framed like OpenCV's Haar boxes: on 129 public_test faces pasted into larger
# images, the original crop was 1.04x the detected box (median). So the default margin is 2%.
DEFAULT_MARGIN = 0.02
_MAX_DETECT_SIDE = 1280  # detection runs on a copy no larger than this; boxes are scaled back


@dataclasses.dataclass(frozen=True)
class Face:
  """One classified face; `box` is (x, y, width, height) in the photo, or None if not detected."""
  box: tuple[int, int, int, int] | None
  emotion: str
  confidence: float
  probabilities: dict[str, float]


def _open(source: Any) -> Image.Image:
  """A PIL image from a path, bytes, a PIL image or an array; raises UserError when unusable."""
  if isinstance(source, Image.Image):
    return ImageOps.exif_transpose(source)
  if isinstance(source, np.ndarray):
    return Image.fromarray(source)
  name = str(source)
  try:
    data = source if isinstance(source, bytes) else pathlib.Path(source).read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
  except FileNotFoundError:
    raise UserError(f'{name}: no such file') from None
  except IsADirectoryError:
    raise UserError(f'{name}: is a folder') from None
  except UnidentifiedImageError:
    raise UserError(f'{name}: not an image') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise UserError(f'{name}: unreadable or truncated image ({e})') from None
  return ImageOps.exif_transpose(image)


class Predictor:
  """Classifies faces with a trained model; finds them first unless `detect` is False."""

  def __init__(self, model: Any, variables: dict[str, Any], *, detect: bool = True,
               margin: float = DEFAULT_MARGIN, min_face_size: int = 24, batch_size: int = 64):
    self._variables = jax.device_put(variables)
    self.detect_faces = detect
    self.margin = margin
    self.min_face_size = min_face_size
    self.batch_size = batch_size
    self._apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, models.preprocess(x),
                                                                  train=False)))
    self._detector = cv2.CascadeClassifier(
        os.path.join(cv2.data.haarcascades, 'haarcascade_frontalface_default.xml'))

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, step: int | None = None,
                   **kwargs: Any) -> Predictor:
    """The best checkpoint of a training run (or `step`)."""
    config, variables, _ = workdirs.restore_variables(workdir, step)
    model = models.create_model(config.model)
    return cls(model, variables, **kwargs)

  @classmethod
  def pretrained(cls, directory: str | os.PathLike = export.PRETRAINED_DIR,
                 **kwargs: Any) -> Predictor:
    """The model shipped inside the package, or one written by `python -m fer_flax.export`."""
    config, variables, _ = export.load(directory)
    model = models.create_model(config.model)
    return cls(model, variables, **kwargs)

  @classmethod
  def load(cls, model: str | None = None, workdir: str | None = None, step: int | None = None,
           **kwargs: Any) -> Predictor:
    """From `model` ("pretrained" or an exported folder) or from a training run's `workdir`."""
    if workdir:
      return cls.from_workdir(workdir, step, **kwargs)
    return cls.pretrained(export.resolve(model or 'pretrained'), **kwargs)

  def detect(self, image: Image.Image) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, width, height), largest first."""
    gray = np.asarray(fer2013.grayscale(image))
    scale = min(1.0, _MAX_DETECT_SIDE / max(gray.shape))
    if scale < 1.0:
      gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    min_side = max(int(self.min_face_size * scale), 12)
    boxes = self._detector.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1,
                                            minNeighbors=5, minSize=(min_side, min_side))
    boxes = [tuple(int(round(v / scale)) for v in box) for box in boxes]
    return sorted(boxes, key=lambda b: -b[2] * b[3])

  def _crop(self, image: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    dx, dy = int(round(w * self.margin)), int(round(h * self.margin))
    region = (max(x - dx, 0), max(y - dy, 0), min(x + w + dx, image.width),
              min(y + h + dy, image.height))
    return fer2013.to_model_input(image.crop(region))

  def faces_of(self, image: Image.Image) -> tuple[list[tuple[int, int, int, int] | None],
                                                 list[np.ndarray]]:
    """(boxes, 48x48 crops) of an image: every detected face, or the whole image."""
    if not self.detect_faces:
      return [None], [fer2013.to_model_input(image)]
    gray = fer2013.grayscale(image)  # Once for the detector and all the crops.
    boxes = self.detect(gray)
    return boxes, [self._crop(gray, b) for b in boxes]

  def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
    """[N, 7] probabilities of 48x48 uint8 faces, in fixed-size batches (one compilation)."""
    out = []
    for start in range(0, len(crops), self.batch_size):
      chunk = np.stack(crops[start:start + self.batch_size])[..., None]
      padded = np.zeros((self.batch_size, *chunk.shape[1:]), np.uint8)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(self._apply(self._variables, padded))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, fer2013.NUM_CLASSES), np.float32)

  def predict(self, image: Any) -> list[Face]:
    """The faces of one photo (a path, bytes, PIL image or array), largest first."""
    boxes, crops = self.faces_of(_open(image))
    return [_face(box, p) for box, p in zip(boxes, self.classify(crops))]


def _face(box: tuple[int, int, int, int] | None, probabilities: np.ndarray) -> Face:
  best = int(np.argmax(probabilities))
  return Face(box, fer2013.EMOTIONS[best], float(probabilities[best]),
              {e: float(p) for e, p in zip(fer2013.EMOTIONS, probabilities)})


@dataclasses.dataclass
class Result:
  """What one input file gave: faces, or the reason it gave none."""
  file: str
  faces: list[Face]
  error: str | None = None


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
                  annotate_dir: pathlib.Path | None = None) -> Iterator[Result]:
  """Results file by file; faces of several files share a batch, so memory stays flat."""
  pending: list[tuple[pathlib.Path, Image.Image | None, list, list]] = []
  num_crops = 0

  def flush() -> Iterator[Result]:
    probabilities = iter(predictor.classify([c for _, _, _, crops in pending for c in crops]))
    for path, image, boxes, crops in pending:
      faces = [_face(box, next(probabilities)) for box in boxes]
      if annotate_dir is not None:
        annotate(image, faces).save(_annotation_path(annotate_dir, path))
      yield Result(str(path), faces)

  for path in files:
    try:
      image = _open(path)
      boxes, crops = predictor.faces_of(image)
    except UserError as e:
      yield Result(str(path), [], str(e))
      continue
    if not crops:
      yield Result(str(path), [], f'{path}: no face found (for photos that are already cropped '
                                  'faces, pass --no-detect)')
      continue
    pending.append((path, image if annotate_dir is not None else None, boxes, crops))
    num_crops += len(crops)
    if num_crops >= predictor.batch_size:
      yield from flush()
      pending, num_crops = [], 0
  yield from flush()


def annotate(image: Image.Image, faces: Sequence[Face]) -> Image.Image:
  """A copy of the photo with each face's box and label drawn on it."""
  out = image.convert('RGB')
  draw = ImageDraw.Draw(out)
  font = ImageFont.load_default(size=max(12, out.width // 40))
  for face in faces:
    x, y, w, h = face.box or (0, 0, out.width, out.height)
    width = max(2, out.width // 200)
    draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(255, 215, 0), width=width)
    label = f'{face.emotion} {face.confidence:.0%}'
    left, top, right, bottom = draw.textbbox((x, y), label, font=font)
    top_y = y - (bottom - top) - 2 * width if y - (bottom - top) - 2 * width >= 0 else y + h
    draw.rectangle((x, top_y, x + right - left + 2 * width, top_y + bottom - top + 2 * width),
                   fill=(255, 215, 0))
    draw.text((x + width, top_y + width - (top - y)), label, fill=(0, 0, 0), font=font)
  return out


def _annotation_path(directory: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
  directory.mkdir(parents=True, exist_ok=True)
  out = directory / f'{path.stem}.jpg'
  n = 1
  while out.exists():
    out = directory / f'{path.stem}-{n}.jpg'
    n += 1
  return out


def _rows(results: Iterable[Result]) -> Iterator[dict[str, Any]]:
  for r in results:
    if r.error:
      yield {'file': r.file, 'error': r.error}
    for i, face in enumerate(r.faces):
      yield {'file': r.file, 'face': i, 'box': list(face.box) if face.box else None,
             'emotion': face.emotion, 'confidence': round(face.confidence, 4),
             'probabilities': {k: round(v, 4) for k, v in face.probabilities.items()}}


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string('model', None, '"pretrained" for the model shipped in the package, or a '
                      'folder written by python -m fer_flax.export.')
  flags.DEFINE_string('workdir', None, 'A training run whose best checkpoint classifies.')
  flags.DEFINE_integer('step', None, 'With --workdir: the checkpoint step; default: the best.')
  flags.DEFINE_boolean('no-detect', False, 'Classify each image as one face, already cropped.')
  flags.DEFINE_float('margin', DEFAULT_MARGIN, 'Extra border around each detected face, as a '
                     'fraction of its size.')
  flags.DEFINE_integer('min_face_size', 24, 'Smallest face to look for, in pixels.')
  flags.DEFINE_integer('batch_size', 64, 'Faces classified per batch.')
  flags.DEFINE_boolean('json', False, 'Print JSON lines instead of a table.')
  flags.DEFINE_boolean('csv', False, 'Print CSV instead of a table.')
  flags.DEFINE_string('annotate', None, 'Write copies of the photos with boxes and labels here.')


def _print(results: Iterable[Result], fmt: str) -> bool:
  """Prints results as they come; returns whether every input gave at least one face."""
  ok = True
  writer = None
  emotions = fer2013.EMOTIONS
  if fmt == 'table':
    print(f'{"file":40s} {"face":>4s} {"box (x,y,w,h)":>19s} {"emotion":>9s} {"conf":>5s}  '
          + ' '.join(f'{e[:7]:>7s}' for e in emotions))
  for row in _rows(results):
    if 'error' in row:
      ok = False
      print(f'fer_flax: {row["error"]}', file=sys.stderr)
      if fmt == 'json':
        print(json.dumps(row), flush=True)
      continue
    if fmt == 'json':
      print(json.dumps(row), flush=True)
    elif fmt == 'csv':
      if writer is None:
        writer = csv.writer(sys.stdout)
        writer.writerow(['file', 'face', 'x', 'y', 'width', 'height', 'emotion', 'confidence',
                         *emotions])
      box = row['box'] or ['', '', '', '']
      writer.writerow([row['file'], row['face'], *box, row['emotion'], row['confidence'],
                       *row['probabilities'].values()])
    else:
      box = ','.join(map(str, row['box'])) if row['box'] else 'whole image'
      probs = ' '.join(f'{row["probabilities"][e]:7.3f}' for e in emotions)
      print(f'{row["file"][-40:]:40s} {row["face"]:4d} {box:>19s} {row["emotion"]:>9s} '
            f'{row["confidence"]:5.2f}  {probs}', flush=True)
  return ok


@exits_on_user_error
def main(argv: list[str]) -> None:
  paths = argv[1:]
  if not paths:
    raise app.UsageError('give at least one photo or folder')
  if (FLAGS.model is None) == (FLAGS.workdir is None):
    raise app.UsageError('give exactly one of --model (pretrained, or an exported folder) and '
                         '--workdir')
  if FLAGS.json and FLAGS.csv:
    raise app.UsageError('give at most one of --json and --csv')
  options = dict(detect=not FLAGS['no-detect'].value, margin=FLAGS.margin,
                 min_face_size=FLAGS.min_face_size,
                 batch_size=FLAGS.batch_size)
  predictor = Predictor.load(FLAGS.model, FLAGS.workdir, FLAGS.step, **options)
  annotate_dir = pathlib.Path(FLAGS.annotate) if FLAGS.annotate else None
  results = predict_files(predictor, expand_inputs(paths), annotate_dir)
  ok = _print(results, 'json' if FLAGS.json else 'csv' if FLAGS.csv else 'table')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
