"""Emotions in videos and from cameras: sampled frames, faces tracked across them, smoothed labels.

Whatever OpenCV reads (mp4, avi, mov, mkv, webm, a camera by index) goes through one path: frames
are sampled at `fps` per second, each sampled frame's faces are detected and classified as a
photo's are, a track id follows each face from frame to frame (greedy matching of boxes by overlap),
and with `smooth` seconds each track's probabilities are averaged over that window, so that labels
do not flicker. Frames are read one at a time, so memory stays flat on long videos.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
from PIL import Image

from fer_flax.core.errors import UserError
from fer_flax.serve import results

VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv')
_MIN_OVERLAP = 0.3  # intersection over union of a box with its track's last box
_TRACK_MEMORY_SECONDS = 1.0  # a face unseen for longer starts a new track


def is_video(path: pathlib.Path) -> bool:
  return path.suffix.lower() in VIDEO_SUFFIXES


@dataclasses.dataclass
class Frame:
  index: int
  time: float
  image: Image.Image


def frames(source: str | int, fps: float) -> Iterator[Frame]:
  """Frames of a video file (or camera index) sampled `fps` times a second.

  A file that cannot be opened, has no frames, or stops before its stated length raises UserError,
  after the frames read before the damage have been yielded.
  """
  name = f'camera {source}' if isinstance(source, int) else str(source)
  if isinstance(source, str) and not pathlib.Path(source).is_file():
    raise UserError(f'{name}: no such file')
  capture = cv2.VideoCapture(source)
  if not capture.isOpened():
    hint = ('check that it is connected and free, or pass another --camera index'
            if isinstance(source, int) else 'not a video OpenCV can read, or damaged')
    raise UserError(f'{name}: cannot be opened ({hint})')
  native_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
  stated = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
  live = isinstance(source, int) or native_fps <= 0
  start, next_time, index = time.monotonic(), 0.0, -1
  try:
    while True:
      if not capture.grab():
        break
      index += 1
      now = time.monotonic() - start if live else index / native_fps
      if now + 1e-9 < next_time:
        continue
      ok, bgr = capture.retrieve()
      if not ok:
        break
      next_time = max(next_time + 1.0 / fps, now)
      yield Frame(index, now, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
  finally:
    capture.release()
  if index < 0:
    raise UserError(f'{name}: no frames (an empty or unreadable video)')
  if not live and stated and index + 1 < stated - 1:
    raise UserError(f'{name}: unreadable after frame {index} of {stated} (truncated or damaged); '
                    'the frames before it were used')


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
  ax, ay, aw, ah = a
  bx, by, bw, bh = b
  w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
  h = max(0, min(ay + ah, by + bh) - max(ay, by))
  union = aw * ah + bw * bh - w * h
  return w * h / union if union else 0.0


class Tracker:
  """Track ids for boxes from frame to frame: each box joins the free track whose last box it
  overlaps most (at least `_MIN_OVERLAP`), seen within `_TRACK_MEMORY_SECONDS`; else a new one."""

  def __init__(self):
    self._tracks: dict[int, tuple[tuple[int, ...], float]] = {}
    self._next = 0

  def update(self, boxes: list[tuple[int, ...]], now: float) -> list[int]:
    live = {t: box for t, (box, seen) in self._tracks.items()
            if now - seen <= _TRACK_MEMORY_SECONDS}
    ids = []
    for box in boxes:
      best = max(live, key=lambda t: _overlap(box, live[t]), default=None)
      if best is None or _overlap(box, live[best]) < _MIN_OVERLAP:
        best, self._next = self._next, self._next + 1
      live.pop(best, None)
      self._tracks[best] = (box, now)
      ids.append(best)
    return ids


class Smoother:
  """Each track's probabilities averaged over the last `seconds` (none: as they are)."""

  def __init__(self, seconds: float):
    self._seconds = seconds
    self._history: dict[int, collections.deque] = collections.defaultdict(collections.deque)

  def __call__(self, track: int, now: float, probabilities: np.ndarray) -> np.ndarray:
    if self._seconds <= 0:
      return probabilities
    history = self._history[track]
    history.append((now, probabilities))
    while history and history[0][0] < now - self._seconds:
      history.popleft()
    return np.mean([p for _, p in history], axis=0)


class AnnotatedVideo:
  """Writes annotated frames as an mp4 beside the others in `directory`."""

  def __init__(self, path: pathlib.Path, fps: float):
    self._path, self._fps, self._writer = path, fps, None

  def write(self, image: Image.Image) -> None:
    if self._writer is None:
      self._path.parent.mkdir(parents=True, exist_ok=True)
      self._writer = cv2.VideoWriter(str(self._path), cv2.VideoWriter_fourcc(*'mp4v'), self._fps,
                                     image.size)
    self._writer.write(cv2.cvtColor(np.asarray(image.convert('RGB')), cv2.COLOR_RGB2BGR))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.release()


def predict_video(predictor: Any, source: str | int, fps: float, smooth: float,
                  annotate_path: pathlib.Path | None = None) -> Iterator[Any]:
  """A `results.Result` per sampled frame that shows faces, then one for an error, if any."""
  name = f'camera:{source}' if isinstance(source, int) else str(source)
  tracker, smoother = Tracker(), Smoother(smooth)
  writer = AnnotatedVideo(annotate_path, fps) if annotate_path else None
  try:
    for frame in frames(source, fps):
      detections, crops = predictor.faces_of(frame.image)
      found = []
      if crops:
        tracks = tracker.update([d.box if d else (0, 0, *frame.image.size) for d in detections],
                                frame.time)
        for d, track, p in zip(detections, tracks, predictor.classify(crops), strict=True):
          face = results.make_face(d, smoother(track, frame.time, p))
          found.append(dataclasses.replace(face, track=track))
      if writer is not None:
        writer.write(results.annotate(frame.image, found))
      if found:
        yield results.Result(name, found, frame=frame.index, time=round(frame.time, 3))
  except UserError as e:
    yield results.Result(name, [], str(e))
  finally:
    if writer is not None:
      writer.close()
