"""What prediction returns, drawn on the photo."""

import numpy as np
from PIL import Image

from fer_flax.serve import results
from fer_flax.serve.predictor import predict_files
from tests import helpers


def test_labels_stay_inside_the_photo():
  image = Image.new('RGB', (120, 80), (40, 40, 40))
  face = results.Face((90, 0, 30, 30), 'surprise', 0.97, {}, 0.9)
  drawn = np.asarray(results.annotate(image, [face]))
  gold = np.all(np.abs(drawn.astype(int) - [255, 215, 0]) < 40, axis=-1)
  assert gold[:, -1].any() and gold[0].any()  # drawn up to the right edge and from the top
  assert not gold[:, :20].any()  # the label moved left only as far as it had to


def test_annotate_draws_boxes_on_a_copy(packed_predictor, tmp_path):
  results = list(predict_files(packed_predictor, [helpers.PHOTO], annotate_dir=tmp_path / 'ann'))
  out = tmp_path / 'ann' / 'astronaut.jpg'
  original = np.asarray(Image.open(helpers.PHOTO).convert('RGB'), np.int32)
  drawn = np.asarray(Image.open(out).convert('RGB'), np.int32)
  assert drawn.shape == original.shape
  x, y, w, h = results[0].faces[0].box
  assert np.abs(drawn[y + h // 2, x] - [255, 215, 0]).sum() < 60  # the box edge is gold
  assert np.abs(drawn - original).mean() < 10  # the rest is the photo


def test_a_face_is_recorded_as_predict_json_prints_it():
  face = results.Face((1, 2, 3, 4), 'happy', 0.912345, {'happy': 0.912345, 'sad': 0.087655},
                      0.99999)
  assert results.record('a.jpg', 0, face) == {
      'file': 'a.jpg', 'face': 0, 'box': [1, 2, 3, 4], 'score': 1.0, 'emotion': 'happy',
      'confidence': 0.9123, 'probabilities': {'happy': 0.9123, 'sad': 0.0877}}
  assert results.record('b.jpg', 2, results.Face(None, 'sad', 0.5, {}))['box'] is None
