"""Videos and cameras: sampled frames, tracks across them, smoothing, and bad inputs named."""

import json
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import fer_flax
from fer_flax.serve import video
from fer_flax.serve.predictor import predict_files
from tests import helpers

PHOTO = pathlib.Path(__file__).parent / 'data' / 'astronaut.jpg'


def _write_video(path: pathlib.Path, frames: int = 30, fps: int = 10) -> pathlib.Path:
  """The test photo sliding right one pixel a frame (MJPG in AVI, which OpenCV always writes)."""
  photo = cv2.cvtColor(np.asarray(Image.open(PHOTO).convert('RGB')), cv2.COLOR_RGB2BGR)
  height, width = photo.shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (width, height))
  for i in range(frames):
    writer.write(cv2.warpAffine(photo, np.float32([[1, 0, i], [0, 1, 0]]), (width, height),
                                borderMode=cv2.BORDER_REPLICATE))
  writer.release()
  return path


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
  return _write_video(tmp_path_factory.mktemp('video') / 'clip.avi')


@pytest.fixture(scope='module')
def shipped_predictor():
  return fer_flax.Predictor.pretrained()


def test_frames_are_sampled_at_the_asked_rate_and_one_face_keeps_its_track(shipped_predictor, clip,
                                                                          tmp_path):
  results = list(predict_files(shipped_predictor, [clip], tmp_path / 'ann', fps=5))
  assert [r.frame for r in results] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28]
  assert [r.time for r in results] == pytest.approx([i / 5 for i in range(15)])
  assert all(r.error is None and len(r.faces) == 1 for r in results)
  assert {r.faces[0].track for r in results} == {0}
  assert results[-1].faces[0].box[0] - results[0].faces[0].box[0] == pytest.approx(28, abs=4)
  written = cv2.VideoCapture(str(tmp_path / 'ann' / 'clip.mp4'))
  assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 15


def test_the_predictor_api_reads_videos_too(shipped_predictor, clip):
  results = list(shipped_predictor.predict_video(clip, fps=2, smooth=1.0))
  assert [r.frame for r in results] == [0, 5, 10, 15, 20, 25]
  assert all(r.faces[0].track == 0 and r.faces[0].emotion for r in results)


def test_smoothing_averages_a_track_over_its_window():
  smoother = video.Smoother(seconds=1.0)
  first, second, third = np.eye(3)
  np.testing.assert_allclose(smoother(0, 0.0, first), first)
  np.testing.assert_allclose(smoother(0, 0.5, second), (first + second) / 2)
  np.testing.assert_allclose(smoother(0, 1.6, third), third)  # the first two are over 1 s old
  np.testing.assert_allclose(smoother(1, 1.6, first), first)  # each track alone
  np.testing.assert_allclose(video.Smoother(0)(0, 0.0, second), second)


def test_tracks_follow_overlapping_boxes_and_new_faces_get_new_ids():
  tracker = video.Tracker()
  assert tracker.update([(0, 0, 10, 10), (50, 50, 10, 10)], 0.0) == [0, 1]
  assert tracker.update([(52, 51, 10, 10), (1, 1, 10, 10)], 0.2) == [1, 0]
  assert tracker.update([(100, 100, 10, 10)], 0.4) == [2]
  assert tracker.update([(0, 0, 10, 10)], 3.0) == [3]  # unseen too long: a new track


def test_json_rows_of_a_video_carry_frame_time_and_track(clip, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.predict', '--model=pretrained', '--json', '--fps=2',
       '--smooth=1', str(clip)], cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [(r['frame'], r['time'], r['track']) for r in rows] == [
      (0, 0.0, 0), (5, 0.5, 0), (10, 1.0, 0), (15, 1.5, 0), (20, 2.0, 0), (25, 2.5, 0)]
  assert all(r['score'] > 0.7 and len(r['probabilities']) == 7 for r in rows)


def test_bad_videos_and_cameras_each_give_one_line_and_the_rest_still_run(clip, tmp_path):
  data = clip.read_bytes()
  (tmp_path / 'truncated.avi').write_bytes(data[:len(data) // 2])
  (tmp_path / 'notes.mp4').write_text('not a video')
  empty = cv2.VideoWriter(str(tmp_path / 'empty.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10,
                          (64, 64))
  empty.release()
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.predict', '--model=pretrained', '--json', '--camera=99',
       str(tmp_path / 'truncated.avi'), str(tmp_path / 'notes.mp4'), str(tmp_path / 'empty.avi'),
       str(clip)], cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  errors = {pathlib.Path(r['file']).name: r['error'] for r in rows if 'error' in r}
  assert 'cannot be opened' in errors['camera:99'] and '--camera' in errors['camera:99']
  assert 'unreadable after frame' in errors['truncated.avi']
  assert 'cannot be opened' in errors['notes.mp4'] or 'no frames' in errors['notes.mp4']
  assert 'no frames' in errors['empty.avi'] or 'cannot be opened' in errors['empty.avi']
  kept = [r for r in rows if r['file'].endswith('truncated.avi') and 'error' not in r]
  assert 5 <= len(kept) < 15  # the frames before the damage
  assert len([r for r in rows if r['file'] == str(clip)]) == 15
  assert result.stderr.count('fer_flax: ') == 4
