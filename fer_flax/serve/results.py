"""What prediction returns: the classified faces of a photo or video frame, and the photo with
them drawn on it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fer_flax.data import fer2013
from fer_flax.serve import faces as faces_lib


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


@dataclasses.dataclass
class Result:
  """What one photo, or one video frame, gave: faces, or the reason it gave none."""
  file: str
  faces: list[Face]
  error: str | None = None
  frame: int | None = None
  time: float | None = None


def make_face(detection: faces_lib.Detection | None, probabilities: np.ndarray) -> Face:
  best = int(np.argmax(probabilities))
  return Face(detection.box if detection else None, fer2013.EMOTIONS[best],
              float(probabilities[best]),
              {e: float(p) for e, p in zip(fer2013.EMOTIONS, probabilities, strict=True)},
              detection.score if detection else None)


def record(file: str, index: int, face: Face) -> dict[str, Any]:
  """A face as `predict --json` prints it and the HTTP server answers it (4 decimal places)."""
  return {'file': file, 'face': index, 'box': list(face.box) if face.box else None,
          'score': None if face.score is None else round(face.score, 4),
          'emotion': face.emotion, 'confidence': round(face.confidence, 4),
          'probabilities': {k: round(v, 4) for k, v in face.probabilities.items()}}


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
