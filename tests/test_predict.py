"""Prediction on photos: faces found and classified, bad files reported, output in every format."""

import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fer_flax
from fer_flax import export, fer2013, models, predict
from fer_flax.errors import UserError
from tests import conftest

PHOTO = pathlib.Path(__file__).parent / 'data' / 'astronaut.jpg'


@pytest.fixture(scope='module')
def exported(finished_run, tmp_path_factory):
  """The tiny run packed as a pretrained model."""
  out = tmp_path_factory.mktemp('pretrained')
  export.export(str(finished_run[1]), out)
  return out


@pytest.fixture(scope='module')
def predictor(exported):
  return fer_flax.Predictor.pretrained(exported, batch_size=8)


def _check_face(face):
  assert face.emotion in fer2013.EMOTIONS
  assert list(face.probabilities) == list(fer2013.EMOTIONS)
  assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
  assert face.confidence == max(face.probabilities.values())


def test_finds_and_classifies_the_face_in_a_photo(predictor):
  faces = predictor.predict(PHOTO)
  assert len(faces) == 1
  x, y, w, h = faces[0].box
  assert abs(x - 86) <= 8 and abs(y - 30) <= 8 and 45 <= w <= 65  # where the face is
  _check_face(faces[0])
  colour = Image.open(PHOTO)
  assert predictor.predict(colour)[0] == faces[0]  # a PIL image works as well as a path
  assert predictor.predict(np.asarray(colour))[0] == faces[0]
  big = colour.resize((1024, 1024))  # any size: the same face, scaled
  assert predictor.predict(big)[0].box[2] == pytest.approx(4 * w, rel=0.15)


def test_crop_matches_training_preprocessing(exported):
  """A cropped face is classified exactly as its 48x48 grayscale form from the data reader."""
  rng = np.random.default_rng(0)
  face = conftest.face(3, rng)
  no_detect = fer_flax.Predictor.pretrained(exported, detect=False)
  from_array = no_detect.predict(face)[0]
  upscaled_colour = Image.fromarray(face).resize((96, 96), Image.Resampling.NEAREST).convert('RGB')
  assert from_array.box is None
  assert no_detect.predict(upscaled_colour)[0].emotion == from_array.emotion
  np.testing.assert_allclose(no_detect.classify([face])[0],
                             list(from_array.probabilities.values()), rtol=1e-5)


def _bad_files(tmp_path):
  (tmp_path / 'notes.txt').write_text('not a photo')
  data = PHOTO.read_bytes()
  (tmp_path / 'truncated.jpg').write_bytes(data[:len(data) // 3])
  Image.new('RGB', (200, 200), (30, 120, 200)).save(tmp_path / 'sky.png')
  shutil.copy(PHOTO, tmp_path / 'good.jpg')
  return tmp_path


def test_bad_files_are_reported_and_the_rest_still_run(predictor, tmp_path):
  folder = _bad_files(tmp_path)
  results = {pathlib.Path(r.file).name: r for r in predict.predict_files(
      predictor, predict.expand_inputs([str(folder), str(tmp_path / 'missing.jpg')]))}
  assert 'not an image' in results['notes.txt'].error
  assert 'unreadable or truncated image' in results['truncated.jpg'].error
  assert 'no face found' in results['sky.png'].error and '--no-detect' in results['sky.png'].error
  assert 'no such file' in results['missing.jpg'].error
  assert results['good.jpg'].error is None and len(results['good.jpg'].faces) == 1
  with pytest.raises(UserError, match='not an image'):
    predictor.predict(folder / 'notes.txt')


def test_results_stream_through_endless_input(exported, tmp_path):
  """Thousands of files are batched through, never gathered first: memory stays flat."""
  face_file = tmp_path / 'face.png'
  Image.fromarray(conftest.face(2, np.random.default_rng(1))).save(face_file)
  no_detect = fer_flax.Predictor.pretrained(exported, detect=False, batch_size=8)
  endless = itertools.repeat(face_file)
  first = list(itertools.islice(predict.predict_files(no_detect, endless), 50))
  assert len(first) == 50 and all(len(r.faces) == 1 for r in first)


def test_annotate_draws_boxes_on_a_copy(predictor, tmp_path):
  results = list(predict.predict_files(predictor, [PHOTO], annotate_dir=tmp_path / 'ann'))
  out = tmp_path / 'ann' / 'astronaut.jpg'
  original = np.asarray(Image.open(PHOTO).convert('RGB'), np.int32)
  drawn = np.asarray(Image.open(out).convert('RGB'), np.int32)
  assert drawn.shape == original.shape
  x, y, w, h = results[0].faces[0].box
  assert np.abs(drawn[y + h // 2, x] - [255, 215, 0]).sum() < 60  # the box edge is gold
  assert np.abs(drawn - original).mean() < 10  # the rest is the photo


def _cli(args, cwd):
  """Runs the CLI where TensorFlow cannot be imported: prediction must not need it."""
  blocker = cwd / 'blocker' / 'tensorflow'
  blocker.mkdir(parents=True, exist_ok=True)
  (blocker / '__init__.py').write_text('raise ImportError("TensorFlow is blocked in this test")')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(blocker.parent)}
  return subprocess.run([sys.executable, '-m', 'fer_flax.predict', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_formats_exit_status_and_no_tensorflow(exported, tmp_path):
  (tmp_path / 'in').mkdir()
  folder = _bad_files(tmp_path / 'in')
  result = _cli([f'--model={exported}', '--json', str(folder)], tmp_path)
  assert result.returncode == 1, result.stderr[-2000:]  # some files failed
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  good = [r for r in rows if 'error' not in r]
  assert len(good) == 1 and good[0]['file'].endswith('good.jpg') and len(good[0]['box']) == 4
  assert sorted(pathlib.Path(r['file']).name for r in rows if 'error' in r) == [
      'notes.txt', 'sky.png', 'truncated.jpg']
  assert 'fer_flax: ' in result.stderr and 'notes.txt: not an image' in result.stderr

  result = _cli([f'--model={exported}', '--csv', str(PHOTO)], tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  header, row = result.stdout.strip().splitlines()
  assert header.split(',')[:8] == ['file', 'face', 'x', 'y', 'width', 'height', 'emotion',
                                   'confidence']
  assert row.split(',')[6] in fer2013.EMOTIONS

  result = _cli([f'--model={exported}', '--no-detect', str(PHOTO)], tmp_path)
  assert result.returncode == 0 and 'whole image' in result.stdout


def test_export_refuses_a_model_over_the_size_limit(finished_run, tmp_path):
  with pytest.raises(UserError, match=r'over the 0.001 MB the package may carry'):
    export.export(str(finished_run[1]), tmp_path, max_megabytes=0.001)


def test_missing_pretrained_model(tmp_path):
  with pytest.raises(UserError, match='no pretrained model in'):
    fer_flax.Predictor.pretrained(tmp_path)


def test_exported_float16_model_agrees_with_its_checkpoint(finished_run, exported):
  from_checkpoint = fer_flax.Predictor.from_workdir(str(finished_run[1]), detect=False)
  shipped = fer_flax.Predictor.pretrained(exported, detect=False)
  faces = [conftest.face(label, np.random.default_rng(label)) for label in range(7)]
  np.testing.assert_allclose(shipped.classify(faces), from_checkpoint.classify(faces), atol=2e-3)
  info = json.loads((exported / export.INFO_FILE).read_text())
  assert info['dtype'] == 'float16' and info['model']['name'] == 'seed_cnn'
  assert len((exported / export.PARAMS_FILE).read_bytes()) < 0.6 * 4 * info['parameters']


def test_prediction_grid_png(exported, small_archive, tmp_path):
  from fer_flax import plots  # pylint: disable=g-import-not-at-top
  predictor = fer_flax.Predictor.pretrained(exported, detect=False)
  path = plots.prediction_grid_png(predictor, fer2013.Source(small_archive), 'public_test',
                                   tmp_path / 'grid.png', per_class=2)
  with Image.open(path) as image:
    assert image.format == 'PNG' and image.size[0] > 800
  with pytest.raises(UserError, match=r"split 'private_test' is not in"):
    plots.prediction_grid_png(predictor, fer2013.Source(small_archive), 'private_test',
                              tmp_path / 'x.png')


def test_evaluate_an_exported_model(finished_run, exported):
  from fer_flax import evaluate  # pylint: disable=g-import-not-at-top
  shipped = evaluate.evaluate_exported(exported, 'public_test')
  original = evaluate.evaluate_checkpoint(str(finished_run[1]), 'public_test')
  assert shipped['step'] == original['step'] and shipped['examples'] == 28
  assert shipped['accuracy'] == pytest.approx(original['accuracy'], abs=1 / 28)
  assert shipped['loss'] == pytest.approx(original['loss'], rel=1e-2)


def test_the_shipped_model_labels_the_face_in_a_photo():
  """`pip install` then `--model=pretrained`: no training, no download."""
  info = json.loads((export.PRETRAINED_DIR / export.INFO_FILE).read_text())
  assert (export.PRETRAINED_DIR / export.PARAMS_FILE).stat().st_size <= 25 * 2**20
  faces = fer_flax.Predictor.pretrained().predict(PHOTO)
  assert len(faces) == 1
  _check_face(faces[0])
  assert info['model']['name'] in models.MODELS
