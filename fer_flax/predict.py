"""Emotions of the faces in ordinary photos: detect, crop, classify. No TensorFlow needed.

  python -m fer_flax.predict --model=pretrained PHOTO_OR_FOLDER ...
  python -m fer_flax.predict --workdir=DIR [--step=N] PHOTO_OR_FOLDER ...
  python -m fer_flax.predict --model=EXPORTED_DIR PHOTO_OR_FOLDER ...
      [--detector=yunet|haar] [--noalign] [--nodetect] [--tta=none|flip|tencrop]
      [--json | --csv] [--annotate=DIR]
  python -m fer_flax.predict --model=pretrained VIDEO ... [--fps=5] [--smooth=1.0]
  python -m fer_flax.predict --model=pretrained --camera=0 [--smooth=1.0]

Faces are found by YuNet (or OpenCV's Haar cascade), framed as FER2013 frames faces, and turned
upright when strongly tilted (`fer_flax.serve.faces`). Each face gets its file, box, the detector's
score, emotion, confidence and all seven probabilities; faces are listed largest first. Videos
and cameras (`fer_flax.serve.video`) add the frame, its time and a track id per face. A file that
cannot be used (not an image, truncated, no face) is reported and the rest still run; the exit
status is 1 if any file failed, 0 otherwise. From Python:

  predictor = fer_flax.Predictor.pretrained()
  faces = predictor.predict('photo.jpg')   # or a PIL image or a numpy array
"""

from __future__ import annotations

import csv
import itertools
import json
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from absl import app, flags

from fer_flax.core import cli
from fer_flax.core.errors import exits_on_user_error
from fer_flax.data import augment, fer2013
from fer_flax.serve import faces, loading, video
from fer_flax.serve.predictor import DEFAULT_TTA, Predictor, expand_inputs, predict_files
from fer_flax.serve.results import Result, record


def _rows(results: Iterable[Result]) -> Iterator[dict[str, Any]]:
  for r in results:
    if r.error:
      yield {'file': r.file, 'error': r.error}
    for i, face in enumerate(r.faces):
      row = record(r.file, i, face)
      if r.frame is not None:
        row.update(frame=r.frame, time=r.time, track=face.track)
      yield row


FLAGS = flags.FLAGS


def define_predictor_flags() -> None:
  """The model and the face-finding flags; `python -m fer_flax.serve` takes them too."""
  flags.DEFINE_string('model', None, '"pretrained" for the model shipped in the package, or a '
                      'folder written by python -m fer_flax.export.')
  flags.DEFINE_string('workdir', None, 'A training run whose best checkpoint classifies.')
  flags.DEFINE_integer('step', None, 'With --workdir: the checkpoint step; default: the best.')
  flags.DEFINE_enum('detector', 'yunet', faces.DETECTORS, 'yunet (boxes, landmarks, scores) or '
                    'OpenCV\'s Haar cascade.')
  flags.DEFINE_boolean('align', True, 'Turn tilted faces upright; --noalign crops them as '
                       'detected.')
  flags.DEFINE_float('margin', 0.0, 'Extra border around each face, as a fraction of the frame '
                     'FER2013 would give it, on each side.')
  flags.DEFINE_integer('min_face_size', 0, 'Smallest face to report, in pixels (Haar: to look '
                       'for; at least 12).')
  flags.DEFINE_enum('tta', DEFAULT_TTA, augment.TTA_MODES, 'Test-time augmentation: average '
                    'each face with its mirror (flip: twice the model\'s work), or with four '
                    'copies shifted by 4 pixels and the mirrors of all five (tencrop: ten times), '
                    'or classify it once (none: what evaluate scores); docs/predict.md measures '
                    'them.')


def predictor_from_flags(**options: Any) -> tuple[loading.LoadedModel, Predictor]:
  """The model the flags name, and a Predictor of it with their face options and `options`."""
  loaded = loading.load_model(FLAGS.model, FLAGS.workdir, FLAGS.step)
  return loaded, Predictor.from_loaded(
      loaded, detector=FLAGS.detector, align=FLAGS.align, margin=FLAGS.margin,
      min_face_size=FLAGS.min_face_size, tta=FLAGS.tta, **options)


def _define_flags() -> None:
  define_predictor_flags()
  flags.DEFINE_boolean('detect', True, 'Find the faces first; --nodetect classifies each image '
                       'as one face, already cropped.')
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
  if FLAGS.json and FLAGS.csv:
    raise app.UsageError('give at most one of --json and --csv')
  _, predictor = predictor_from_flags(detect=FLAGS.detect, batch_size=FLAGS.batch_size)
  annotate_dir = pathlib.Path(FLAGS.annotate) if FLAGS.annotate else None
  results = predict_files(predictor, expand_inputs(paths), annotate_dir, FLAGS.fps, FLAGS.smooth)
  if FLAGS.camera is not None:
    annotated = annotate_dir / f'camera{FLAGS.camera}.mp4' if annotate_dir else None
    results = itertools.chain(
        video.predict_video(predictor, FLAGS.camera, FLAGS.fps, FLAGS.smooth, annotated), results)
  try:
    ok = _print(results, 'json' if FLAGS.json else 'csv' if FLAGS.csv else 'table')
  except KeyboardInterrupt:  # How a camera is stopped.
    ok = True
  sys.exit(0 if ok else 1)


def run() -> None:
  """`fer-flax-predict`, `python -m fer_flax.predict`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
