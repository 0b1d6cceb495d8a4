"""Face detection and cropping: YuNet by default, Haar on request, crops framed as FER2013's."""

import pathlib

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_flax.core.errors import UserError
from fer_flax.serve import faces
from fer_flax.serve.predictor import Predictor
from tests import helpers

PHOTO = pathlib.Path(__file__).parent / 'data' / 'astronaut.jpg'


def _photo() -> np.ndarray:
  return np.asarray(Image.open(PHOTO).convert('RGB'))


def test_yunet_finds_the_face_with_a_score_and_five_landmarks_inside_its_box():
  (face,) = faces.YuNet().detect(_photo())
  x, y, w, h = face.box
  assert 0.7 <= face.score <= 1.0
  assert len(face.landmarks) == 5
  for px, py in face.landmarks:
    assert x <= px <= x + w and y <= py <= y + h
  (gray_face,) = faces.YuNet().detect(np.asarray(Image.open(PHOTO).convert('L')))
  assert abs(gray_face.box[0] - x) <= 4


def test_boxes_are_clamped_to_the_photo_and_listed_largest_first():
  photo = _photo()
  cut = photo[:, 100:]  # the face now runs off the left edge
  (face,) = faces.YuNet().detect(cut)
  assert face.box[0] == 0 and face.box[0] + face.box[2] <= cut.shape[1]
  small = cv2.resize(photo, None, fx=0.5, fy=0.5)
  two = np.zeros((photo.shape[0], photo.shape[1] + small.shape[1], 3), np.uint8)
  two[:small.shape[0], :small.shape[1]] = small
  two[:, small.shape[1]:] = photo
  found = faces.YuNet().detect(two)
  assert len(found) == 2 and found[0].box[2] > found[1].box[2]


def test_haar_stays_selectable_and_unknown_detectors_are_named():
  (face,) = Predictor.pretrained(detector='haar').detect(Image.open(PHOTO))
  assert face.landmarks is None and face.score > 0
  with pytest.raises(UserError, match="unknown face detector 'mtcnn'; choose yunet or haar"):
    faces.create_detector('mtcnn')


def _pasted(face: np.ndarray, angle: float = 0.0):
  """The face enlarged 4x into a larger image, turned by `angle` degrees about its centre."""
  canvas = np.full((400, 400), 90, np.uint8)
  canvas[100:292, 120:312] = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
  turn = cv2.getRotationMatrix2D((216, 196), angle, 1.0)
  return cv2.warpAffine(canvas, turn, (400, 400), borderMode=cv2.BORDER_REPLICATE)


def test_a_box_framed_as_measured_gives_back_the_face_and_alignment_turns_it_upright():
  face = helpers.face(3, np.random.default_rng(0))
  face = cv2.GaussianBlur(face, (5, 5), 0)  # smooth, so that resampling changes it little
  ratio, shift = faces.BOX_FRAMING['yunet']
  height = 192 / ratio
  box = (int(round(216 - height / 2)), int(round(196 - shift * height - height / 2)),
         int(round(height)), int(round(height)))
  eyes = ((180.0, 160.0), (252.0, 160.0))
  upright = faces.Detection(box, 0.9, (*eyes, (216.0, 190.0), (190.0, 220.0), (242.0, 220.0)))
  by_box = faces.crop(_pasted(face), upright, 'yunet', align=False)
  assert np.abs(by_box.astype(int) - face).mean() < 6

  by_landmarks = faces.crop(_pasted(face), upright, 'yunet')
  turn = cv2.getRotationMatrix2D((216, 196), 20, 1.0)  # counter-clockwise on screen
  tilted_points = tuple(tuple(turn @ [x, y, 1]) for x, y in upright.landmarks)
  tilted = faces.Detection(box, 0.9, tilted_points)
  assert np.degrees(faces.eye_tilt(tilted.landmarks)) == pytest.approx(-20, abs=0.1)
  aligned = faces.crop(_pasted(face, 20), tilted, 'yunet')
  unaligned = faces.crop(_pasted(face, 20), tilted, 'yunet', align=False)
  assert np.abs(aligned.astype(int) - by_landmarks).mean() < 4
  assert (np.abs(unaligned.astype(int) - face).mean()
          > 2 * np.abs(aligned.astype(int) - by_landmarks).mean())
  slight = tuple(tuple(cv2.getRotationMatrix2D((216, 196), 5, 1.0) @ [x, y, 1])
                 for x, y in upright.landmarks)
  assert faces.levelling_angle(slight) == 0.0  # under 8 degrees: not turned
  assert faces.levelling_angle(tilted.landmarks) == faces.eye_tilt(tilted.landmarks)


def test_landmarks_frame_a_real_face_within_the_fits_range():
  (face,) = faces.YuNet().detect(_photo())
  dx, dy, side = faces.landmark_features(face, 0.0) @ faces.LANDMARK_FRAMING
  assert abs(dx) < 0.1 and abs(dy) < 0.1 and 0.85 < side < 1.15
