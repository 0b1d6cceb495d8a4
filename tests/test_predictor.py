"""The Predictor: faces found and classified as training sees them, bad files reported, input
streamed, and the shipped model."""

import itertools
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

import fer_flax
from fer_flax import models
from fer_flax.core.errors import ImageError, UserError
from fer_flax.data import fer2013
from fer_flax.serve import package
from fer_flax.serve.predictor import expand_inputs, open_image, predict_files
from tests import helpers


def _check_face(face):
  assert face.emotion in fer2013.EMOTIONS
  assert list(face.probabilities) == list(fer2013.EMOTIONS)
  assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
  assert face.confidence == max(face.probabilities.values())


def test_finds_and_classifies_the_face_in_a_photo(packed_predictor):
  faces = packed_predictor.predict(helpers.PHOTO)
  assert len(faces) == 1
  x, y, w, h = faces[0].box
  assert abs(x - 86) <= 8 and abs(y - 30) <= 8 and 45 <= w <= 65  # where the face is
  _check_face(faces[0])
  colour = Image.open(helpers.PHOTO)
  assert packed_predictor.predict(colour)[0] == faces[0]  # a PIL image works as well as a path
  assert packed_predictor.predict(np.asarray(colour))[0] == faces[0]
  big = colour.resize((1024, 1024))  # any size: the same face, scaled
  assert packed_predictor.predict(big)[0].box[2] == pytest.approx(4 * w, rel=0.15)


def test_crop_matches_training_preprocessing(packed_run):
  """A cropped face is classified exactly as its 48x48 grayscale form from the data reader."""
  rng = np.random.default_rng(0)
  face = helpers.face(3, rng)
  no_detect = fer_flax.Predictor.pretrained(packed_run, detect=False)
  from_array = no_detect.predict(face)[0]
  upscaled_colour = Image.fromarray(face).resize((96, 96), Image.Resampling.NEAREST).convert('RGB')
  assert from_array.box is None
  assert no_detect.predict(upscaled_colour)[0].emotion == from_array.emotion
  np.testing.assert_allclose(no_detect.classify([face])[0],
                             list(from_array.probabilities.values()), rtol=1e-5)


def test_bad_files_are_reported_and_the_rest_still_run(packed_predictor, tmp_path):
  folder = helpers.bad_files(tmp_path)
  results = {pathlib.Path(r.file).name: r for r in predict_files(
      packed_predictor, expand_inputs([str(folder), str(tmp_path / 'missing.jpg')]))}
  assert 'not an image' in results['notes.txt'].error
  assert 'unreadable or truncated image' in results['truncated.jpg'].error
  assert 'no face found' in results['sky.png'].error and '--nodetect' in results['sky.png'].error
  assert 'no such file' in results['missing.jpg'].error
  assert results['good.jpg'].error is None and len(results['good.jpg'].faces) == 1
  with pytest.raises(UserError, match='not an image'):
    packed_predictor.predict(folder / 'notes.txt')


def test_results_stream_through_endless_input(packed_run, tmp_path):
  """Thousands of files are batched through, never gathered first: memory stays flat."""
  face_file = tmp_path / 'face.png'
  Image.fromarray(helpers.face(2, np.random.default_rng(1))).save(face_file)
  no_detect = fer_flax.Predictor.pretrained(packed_run, detect=False, batch_size=8)
  endless = itertools.repeat(face_file)
  first = list(itertools.islice(predict_files(no_detect, endless), 50))
  assert len(first) == 50 and all(len(r.faces) == 1 for r in first)


def test_the_shipped_model_labels_the_face_in_a_photo():
  """`pip install` then `--model=pretrained`: no training, no download."""
  info = json.loads((package.PRETRAINED_DIR / package.INFO_FILE).read_text())
  assert (package.PRETRAINED_DIR / package.PARAMS_FILE).stat().st_size <= 25 * 2**20
  faces = fer_flax.Predictor.pretrained().predict(helpers.PHOTO)
  assert len(faces) == 1
  _check_face(faces[0])
  assert info['model']['name'] in models.MODELS


def test_a_photo_over_the_pixel_limit_is_refused_before_it_is_decoded():
  with pytest.raises(ImageError, match='huge.png: over 100 megapixels; shrink it') as refused:
    open_image(helpers.png_header_only(20_000, 20_000), name='huge.png')  # 400 MP in 45 bytes
  assert refused.value.reason == 'too large'
  with pytest.raises(ImageError, match='over 0.01 megapixels'):
    open_image(helpers.PHOTO, max_pixels=10_000)
  with pytest.raises(ImageError, match=r'^the photo: not an image$'):
    open_image(b'plain text')


def test_batches_are_padded_to_a_power_of_two_and_give_the_same_answers(packed_predictor):
  assert [packed_predictor.padded_size(n) for n in (1, 2, 3, 5, 8, 9, 100)] == [
      1, 2, 4, 8, 8, 8, 8]  # batch_size 8
  packed_predictor.warm_up()
  crops = [helpers.face(i % 7, np.random.default_rng(i)) for i in range(11)]
  together = packed_predictor.classify(crops)
  alone = np.concatenate([packed_predictor.classify([c]) for c in crops])
  np.testing.assert_allclose(together, alone, atol=1e-5)


def test_threads_share_a_predictor_each_with_its_own_detector(packed_predictor):
  import concurrent.futures
  import threading
  together = threading.Barrier(4)  # Four threads at once, each with a detector of its own.

  def predict(_):
    together.wait(timeout=60)
    return id(packed_predictor._detector), [f.box for f in packed_predictor.predict(helpers.PHOTO)]

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    found = list(pool.map(predict, range(4)))
  assert len({detector for detector, _ in found}) == 4
  assert all(boxes == found[0][1] and len(boxes) == 1 for _, boxes in found)


def test_flip_tta_by_default_averages_each_face_with_its_mirror(packed_run, packed_predictor):
  from fer_flax.serve.predictor import Predictor  # pylint: disable=g-import-not-at-top
  single = Predictor.pretrained(packed_run, batch_size=8, tta='none')
  crops = [helpers.face(i, np.random.default_rng(i)) for i in range(3)]
  mirrors = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
  expected = (single.classify(crops) + single.classify(mirrors)) / 2
  np.testing.assert_allclose(packed_predictor.classify(crops), expected, atol=1e-5)
  assert not np.allclose(expected, single.classify(crops), atol=1e-3)
  with pytest.raises(UserError, match='tta=.*choose one of none, flip, tencrop'):
    Predictor.pretrained(packed_run, tta='mirror')
