"""Emotions of the faces in ordinary photos: detect, crop, classify. No TensorFlow needed.

  python -m fer_flax.predict --model=pretrained PHOTO_OR_FOLDER ...
  python -m fer_flax.predict --workdir=DIR [--step=N] PHOTO_OR_FOLDER ...
  python -m fer_flax.predict --model=EXPORTED_DIR PHOTO_OR_FOLDER ...
      [--detector=yunet|haar] [--no-align] [--no-detect] [--json | --csv] [--annotate=DIR]
  python -m fer_flax.predict --model=pretrained VIDEO ... [--fps=5] [--smooth=1.0]
  python -m fer_flax.predict --model=pretrained --camera=0 [--smooth=1.0]

Faces are found by YuNet (or OpenCV's Haar cascade), framed as FER2013 frames faces, and turned
upright when strongly tilted (`fer_flax.faces`). Each face gets its file, box, the detector's
score, emotion, confidence and all seven probabilities; faces are listed largest first. Videos
and cameras (`fer_flax.video`) add the frame, its time and a track id per face. A file that
cannot be used (not an image, truncated, no face) is reported and the rest still run; the exit
status is 1 if any file failed, 0 otherwise. From Python:

  predictor = fer_flax.Predictor.pretrained()
  faces = predictor.predict('photo.jpg')   # or a PIL image or a numpy array
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import os
import pathlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from fer_flax import export, faces, fer2013, models, workdirs
from fer_flax.errors import UserError, exits_on_user_error

# Annotated photos wait, decoded, for their faces' batch: at most this many at a time.
_MAX_PENDING_ANNOTATIONS = 8


@dataclasses.dataclass(frozen=True)
class Face:
  """One classified face; `box` is (x, y, width, height) in the photo, or None if not detected;
  `score` is the detector's."""
  box: tuple[int, int, int, int] | None
  emotion: str
  confidence: float
  probabilities: dict[str, float]
  score: float | None = None
  track: int | None = None


def open_image(source: Any) -> Image.Image:
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
               detector: str = 'yunet', align: bool = True, margin: float = 0.0,
               min_face_size: int = 0, batch_size: int = 64):
    self._variables = jax.device_put(variables)
    self.detect_faces = detect
    self.align = align
    self.margin = margin
    self.batch_size = batch_size
    self._apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, models.preprocess(x),
                                                                  train=False)))
    self._detector = faces.create_detector(detector, min_face_size=min_face_size)

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

  def detect(self, image: Image.Image) -> list[faces.Detection]:
    """The faces of a photo (boxes, scores, landmarks), largest first, found in colour."""
    return self._detector.detect(np.asarray(fer2013.rgb(image)))

  def faces_of(self, image: Image.Image) -> tuple[list[faces.Detection | None],
                                                 list[np.ndarray]]:
    """(detections, 48x48 crops) of an image: every detected face, or the whole image."""
    if not self.detect_faces:
      return [None], [fer2013.to_model_input(image)]
    detections = self.detect(image)
    gray = np.asarray(fer2013.grayscale(image))  # Once for all the crops.
    return detections, [faces.crop(gray, d, self._detector.name, self.align, self.margin)
                        for d in detections]

  def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
    """[N, 7] probabilities of 48x48 uint8 faces, in fixed-size batches (one compilation)."""
    out = []
    for start in range(0, len(crops), self.batch_size):
      chunk = np.stack(crops[start:start + self.batch_size])[..., None]
      padded = np.zeros((self.batch_size, *chunk.shape[1:]), np.uint8)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(self._apply(self._variables, padded))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, fer2013.NUM_CLASSES), np.float32)

  def predict_video(self, source: str | os.PathLike | int, fps: float = 5.0,
                    smooth: float = 0.0) -> Iterator[Result]:
    """A Result per sampled frame of a video file (or camera index) that shows faces; faces
    carry track ids, and `smooth` seconds average each track's probabilities."""
    from fer_flax import video  # pylint: disable=g-import-not-at-top
    return video.predict_video(self, source if isinstance(source, int) else str(source), fps,
                               smooth)

  def predict(self, image: Any) -> list[Face]:
    """The faces of one photo (a path, bytes, PIL image or array), largest first."""
    detections, crops = self.faces_of(open_image(image))
    return [make_face(d, p) for d, p in zip(detections, self.classify(crops))]


def make_face(detection: faces.Detection | None, probabilities: np.ndarray) -> Face:
  best = int(np.argmax(probabilities))
  return Face(detection.box if detection else None, fer2013.EMOTIONS[best],
              float(probabilities[best]),
              {e: float(p) for e, p in zip(fer2013.EMOTIONS, probabilities)},
              detection.score if detection else None)


@dataclasses.dataclass
class Result:
  """What one photo, or one video frame, gave: faces, or the reason it gave none."""
  file: str
  faces: list[Face]
  error: str | None = None
  frame: int | None = None
  time: float | None = None


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
  from fer_flax import video  # pylint: disable=g-import-not-at-top
  pending: list[tuple[pathlib.Path, Image.Image | None, list, list]] = []
  num_crops = 0

  def flush() -> Iterator[Result]:
    probabilities = iter(predictor.classify([c for _, _, _, crops in pending for c in crops]))
    for path, image, detections, crops in pending:
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
                                  'faces, pass --no-detect)')
      continue
    pending.append((path, image if annotate_dir is not None else None, detections, crops))
    num_crops += len(crops)
    if (num_crops >= predictor.batch_size
        or (annotate_dir is not None and len(pending) >= _MAX_PENDING_ANNOTATIONS)):
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
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    label_w, label_h = right - left + 2 * width, bottom - top + 2 * width
    # Above the box if there is room, else inside its top; never past the photo's edges.
    label_x = max(0, min(x, out.width - label_w))
    label_y = y - label_h if y - label_h >= 0 else min(y, max(0, out.height - label_h))
    draw.rectangle((label_x, label_y, label_x + label_w, label_y + label_h), fill=(255, 215, 0))
    draw.text((label_x + width - left, label_y + width - top), label, fill=(0, 0, 0), font=font)
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
      row = {'file': r.file, 'face': i, 'box': list(face.box) if face.box else None,
             'score': None if face.score is None else round(face.score, 4),
             'emotion': face.emotion, 'confidence': round(face.confidence, 4),
             'probabilities': {k: round(v, 4) for k, v in face.probabilities.items()}}
      if r.frame is not None:
        row.update(frame=r.frame, time=r.time, track=face.track)
      yield row


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string('model', None, '"pretrained" for the model shipped in the package, or a '
                      'folder written by python -m fer_flax.export.')
  flags.DEFINE_string('workdir', None, 'A training run whose best checkpoint classifies.')
  flags.DEFINE_integer('step', None, 'With --workdir: the checkpoint step; default: the best.')
  flags.DEFINE_boolean('no-detect', False, 'Classify each image as one face, already cropped.')
  flags.DEFINE_enum('detector', 'yunet', faces.DETECTORS, 'yunet (boxes, landmarks, scores) or '
                    'OpenCV\'s Haar cascade.')
  flags.DEFINE_boolean('no-align', False, 'Crop faces as detected, without turning tilted ones '
                       'upright.')
  flags.DEFINE_float('margin', 0.0, 'Extra border around each face, as a fraction of the frame '
                     'FER2013 would give it, on each side.')
  flags.DEFINE_integer('min_face_size', 0, 'Smallest face to report, in pixels (Haar: to look '
                       'for; at least 12).')
  flags.DEFINE_integer('batch_size', 64, 'Faces classified per batch.')
  flags.DEFINE_integer('camera', None, 'Also classify the faces a camera sees (its OpenCV index), '
                       'until Ctrl-C.')
  flags.DEFINE_float('fps', 5.0, 'Videos and cameras: frames sampled a second.')
  flags.DEFINE_float('smooth', 0.0, 'Videos and cameras: average each tracked face\'s '
                     'probabilities over this many seconds, so labels do not flicker.')
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
                         'score', *emotions, 'frame', 'time', 'track'])
      box = row['box'] or ['', '', '', '']
      writer.writerow([row['file'], row['face'], *box, row['emotion'], row['confidence'],
                       '' if row['score'] is None else row['score'],
                       *row['probabilities'].values(),
                       *(row.get(k, '') for k in ('frame', 'time', 'track'))])
    else:
      box = ','.join(map(str, row['box'])) if row['box'] else 'whole image'
      probs = ' '.join(f'{row["probabilities"][e]:7.3f}' for e in emotions)
      where = row['file'] if 'frame' not in row else f'{row["file"]} @{row["time"]:.2f}s'
      face = row['face'] if 'track' not in row else row['track']
      print(f'{where[-40:]:40s} {face:4d} {box:>19s} {row["emotion"]:>9s} '
            f'{row["confidence"]:5.2f}  {probs}', flush=True)
  return ok


@exits_on_user_error
def main(argv: list[str]) -> None:
  paths = argv[1:]
  if not paths and FLAGS.camera is None:
    raise app.UsageError('give at least one photo, video or folder, or --camera=INDEX')
  if FLAGS.fps <= 0:
    raise app.UsageError('--fps must be above 0')
  if (FLAGS.model is None) == (FLAGS.workdir is None):
    raise app.UsageError('give exactly one of --model (pretrained, or an exported folder) and '
                         '--workdir')
  if FLAGS.json and FLAGS.csv:
    raise app.UsageError('give at most one of --json and --csv')
  options = dict(detect=not FLAGS['no-detect'].value, detector=FLAGS.detector,
                 align=not FLAGS['no-align'].value, margin=FLAGS.margin,
                 min_face_size=FLAGS.min_face_size,
                 batch_size=FLAGS.batch_size)
  predictor = Predictor.load(FLAGS.model, FLAGS.workdir, FLAGS.step, **options)
  annotate_dir = pathlib.Path(FLAGS.annotate) if FLAGS.annotate else None
  results = predict_files(predictor, expand_inputs(paths), annotate_dir, FLAGS.fps, FLAGS.smooth)
  if FLAGS.camera is not None:
    from fer_flax import video  # pylint: disable=g-import-not-at-top
    annotated = annotate_dir / f'camera{FLAGS.camera}.mp4' if annotate_dir else None
    results = itertools.chain(
        video.predict_video(predictor, FLAGS.camera, FLAGS.fps, FLAGS.smooth, annotated), results)
  try:
    ok = _print(results, 'json' if FLAGS.json else 'csv' if FLAGS.csv else 'table')
  except KeyboardInterrupt:  # How a camera is stopped.
    ok = True
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
