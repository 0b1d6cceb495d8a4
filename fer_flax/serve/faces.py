"""Faces in photos: where they are, and the 48x48 crops the model was trained on. No TensorFlow.

Two detectors: YuNet (the default; shipped in `fer_flax/serve/detectors/` with its licence),
which also gives five landmarks and a score, and OpenCV's Haar cascade (`haar`), the former
default. A crop is framed the way FER2013 frames its faces, from YuNet's box and landmarks (from
the box alone for Haar, or without alignment), and turned upright when YuNet's eye landmarks show
a strong tilt. The constants below were measured by `benchmarks/face_crops.py` (docs/predict.md),
which pastes FER2013 faces into larger images, detects them, and compares the crops with the faces
as stored.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import cv2
import numpy as np

from fer_flax.core.errors import UserError
from fer_flax.data import fer2013

DETECTORS = ('yunet', 'haar')
YUNET_MODEL = pathlib.Path(__file__).parent / 'detectors' / 'face_detection_yunet_2023mar.onnx'

# The square crop around a box that frames a face as FER2013 does: its side and the shift of its
# centre, in box heights, per detector (their boxes frame faces differently). Medians over
# training faces pasted into larger images: benchmarks/face_crops.py.
BOX_FRAMING = {'yunet': (0.975, -0.018), 'haar': (1.037, 0.003)}
# With YuNet's landmarks: landmark_features(detection) @ LANDMARK_FRAMING is the frame's centre
# (x, y, from the box's centre, in box heights, in the levelled frame) and side (in box heights),
# fitted by least squares on the same pasted training faces; it frames public_test faces closer
# to FER2013's own framing than the box alone (docs/predict.md).
LANDMARK_FRAMING = np.array([  # columns: centre x, centre y, side
    [0.0779, -0.1127, 1.4935],  # 1
    [0.0165, 0.0069, 1.0086],  # w/h
    [0.0924, 0.6654, -1.7528],  # right eye x
    [-0.7350, 0.3259, -0.3212],  # right eye y
    [-0.4908, -0.3265, -1.3867],  # left eye x
    [0.7063, -0.1054, 1.4288],  # left eye y
    [0.2291, 0.0111, 1.5413],  # nose x
    [0.0383, -0.3171, 0.6021],  # nose y
    [-0.0615, -0.7181, 1.6235],  # right mouth x
    [0.4304, 0.5501, -2.5078],  # right mouth y
    [0.1591, 0.3950, -1.3171],  # left mouth x
    [-0.5274, 0.1206, -0.9312],  # left mouth y
])
# Alignment turns a face upright only when its eyes tilt more than this: FER2013's own faces tilt a
# little, and levelling those cost accuracy, while levelling strongly tilted ones gained
# (benchmarks/face_crops.py --tilt).
ALIGN_MIN_DEGREES = 8.0

Box = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class Detection:
  """A face: its box (x, y, width, height) inside the photo, the detector's score, and YuNet's
  five landmarks (right eye, left eye, nose tip, right and left mouth corners) in the photo."""
  box: Box
  score: float
  landmarks: tuple[tuple[float, float], ...] | None = None


def _clamp(x: float, y: float, w: float, h: float, width: int, height: int) -> Box | None:
  """The part of a box inside the image, in whole pixels; None if nothing is left."""
  left, top = max(0, int(round(x))), max(0, int(round(y)))
  right, bottom = min(width, int(round(x + w))), min(height, int(round(y + h)))
  if right - left < 2 or bottom - top < 2:
    return None
  return left, top, right - left, bottom - top


def _shrunk(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
  """(a copy at most `max_side` pixels long, the scale from the image to it); detectors run on
  it, and their boxes are divided by the scale."""
  scale = min(1.0, max_side / max(image.shape[:2]))
  if scale == 1.0:
    return image, scale
  return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale


def _largest_first(detections: list[Detection]) -> list[Detection]:
  return sorted(detections, key=lambda d: -d.box[2] * d.box[3])


class YuNet:
  """OpenCV's YuNet on a copy of the photo at most `input_side` pixels long.

  The model was trained on faces of about 10 to 300 pixels, so shrinking large photos keeps large
  faces in its range; boxes and landmarks are scaled back to the photo.
  """
  name = 'yunet'

  def __init__(self, input_side: int = 640, score_threshold: float = 0.7,
               nms_threshold: float = 0.3, min_face_size: int = 0):
    if not YUNET_MODEL.exists():
      raise UserError(f'{YUNET_MODEL} is missing; reinstall fer_flax, or pass --detector=haar')
    self.input_side, self.min_face_size = input_side, min_face_size
    self._detector = cv2.FaceDetectorYN.create(str(YUNET_MODEL), '', (input_side, input_side),
                                               score_threshold, nms_threshold, 5000)

  def detect(self, image: np.ndarray) -> list[Detection]:
    """Faces in an RGB or grayscale uint8 image, largest first."""
    height, width = image.shape[:2]
    small, scale = _shrunk(image, self.input_side)
    small = (cv2.cvtColor(small, cv2.COLOR_GRAY2BGR) if small.ndim == 2
             else cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    self._detector.setInputSize((small.shape[1], small.shape[0]))
    _, found = self._detector.detect(small)
    detections = []
    for row in found if found is not None else ():
      box = _clamp(*(row[:4] / scale), width, height)
      if box is None or max(box[2], box[3]) < self.min_face_size:
        continue
      points = tuple((float(x), float(y)) for x, y in (row[4:14] / scale).reshape(5, 2))
      detections.append(Detection(box, float(row[14]), points))
    return _largest_first(detections)


class Haar:
  """OpenCV's frontal-face Haar cascade, on an equalised grayscale copy at most 1280 pixels long.

  Its score is the cascade's level weight (larger is surer; not a probability).
  """
  name = 'haar'
  _MAX_SIDE = 1280

  def __init__(self, min_face_size: int = 24):
    self.min_face_size = min_face_size
    self._cascade = cv2.CascadeClassifier(
        os.path.join(cv2.data.haarcascades, 'haarcascade_frontalface_default.xml'))

  def detect(self, image: np.ndarray) -> list[Detection]:
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    gray, scale = _shrunk(gray, self._MAX_SIDE)
    min_side = max(int(self.min_face_size * scale), 12)
    boxes, _, weights = self._cascade.detectMultiScale3(
        cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side),
        outputRejectLevels=True)
    detections = []
    for box, weight in zip(boxes, np.ravel(weights), strict=True):
      clamped = _clamp(*(np.asarray(box) / scale), width, height)
      if clamped is not None:
        detections.append(Detection(clamped, float(weight)))
    return _largest_first(detections)


def create_detector(name: str, **kwargs) -> YuNet | Haar:
  """The detector `name` (yunet or haar), with its own options."""
  if name == 'yunet':
    return YuNet(**kwargs)
  if name == 'haar':
    return Haar(**{k: v for k, v in kwargs.items() if k == 'min_face_size'})
  raise UserError(f'unknown face detector {name!r}; choose {" or ".join(DETECTORS)}')


def _warp(gray: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """The 48x48 crop that `matrix` (photo -> 48x48 frame) selects, resampled without aliasing.

  The warp goes to 4x the size (bilinear), then area-averages down, as large faces shrink a lot.
  """
  size, over = fer2013.IMAGE_SIZE, 4
  big = cv2.warpAffine(gray, matrix * [[over], [over]], (size * over, size * over),
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def _framing(box: Box, detector: str) -> tuple[np.ndarray, float]:
  """(centre, side) of the square that frames the face in `box` as FER2013 does."""
  x, y, w, h = box
  side_ratio, shift = BOX_FRAMING[detector]
  return np.array([x + w / 2, y + h / 2 + shift * h]), side_ratio * h


def landmark_features(detection: Detection, angle: float) -> np.ndarray:
  """LANDMARK_FRAMING's inputs: 1, the box's width / height, and the five landmarks relative to
  the box's centre, in box heights, turned by -`angle` (so that levelled eyes are level)."""
  x, y, w, h = detection.box
  points = levelled(np.asarray(detection.landmarks) - [x + w / 2, y + h / 2], angle)
  return np.concatenate([[1.0, w / h], points.ravel() / h])


def _landmark_framing(detection: Detection, angle: float) -> tuple[np.ndarray, float]:
  """(centre, side) of the square, turned by `angle`, that frames the face as FER2013 does."""
  x, y, w, h = detection.box
  dx, dy, side = landmark_features(detection, angle) @ LANDMARK_FRAMING
  # Bounds far outside what the fit saw (about 1 +- 0.1 box heights): a profile's landmarks are.
  dx, dy, side = np.clip(dx, -0.3, 0.3), np.clip(dy, -0.3, 0.3), np.clip(side, 0.7, 1.4)
  return np.array([x + w / 2, y + h / 2]) + h * levelled([dx, dy], -angle), side * h


def levelling_angle(landmarks: tuple[tuple[float, float], ...]) -> float:
  """The eyes' tilt (radians) that alignment undoes: 0 under ALIGN_MIN_DEGREES."""
  angle = eye_tilt(landmarks)
  return angle if abs(np.degrees(angle)) > ALIGN_MIN_DEGREES else 0.0


def levelled(vectors: np.ndarray, angle: float) -> np.ndarray:
  """[..., 2] vectors turned by -`angle`: in the frame where eyes tilted by `angle` are level."""
  cos, sin = np.cos(angle), np.sin(angle)
  return np.asarray(vectors) @ np.array([[cos, -sin], [sin, cos]])


def eye_tilt(landmarks: tuple[tuple[float, float], ...]) -> float:
  """The angle (radians) of the line from the right eye to the left eye; 0 when level."""
  (rx, ry), (lx, ly) = landmarks[:2]
  return float(np.arctan2(ly - ry, lx - rx))


def crop(gray: np.ndarray, detection: Detection, detector: str, align: bool = True,
         margin: float = 0.0) -> np.ndarray:
  """The 48x48 uint8 face the model takes, framed as FER2013 frames faces.

  With `align` and landmarks, the frame comes from the box and landmarks (LANDMARK_FRAMING), and a
  face whose eyes tilt more than ALIGN_MIN_DEGREES is turned upright about the frame's centre;
  otherwise from the box alone (BOX_FRAMING). `margin` widens the frame by that fraction of it on
  each side.
  """
  angle = 0.0
  if align and detection.landmarks is not None:
    angle = levelling_angle(detection.landmarks)
    centre, side = _landmark_framing(detection, angle)
  else:
    centre, side = _framing(detection.box, detector)
  side *= 1 + 2 * margin
  scale = fer2013.IMAGE_SIZE / side
  cos, sin = scale * np.cos(-angle), scale * np.sin(-angle)
  rotation = np.array([[cos, -sin], [sin, cos]])
  half = fer2013.IMAGE_SIZE / 2
  matrix = np.hstack([rotation, (np.array([half, half]) - rotation @ centre)[:, None]])
  return _warp(gray, matrix)
