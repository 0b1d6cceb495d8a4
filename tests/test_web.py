"""The web page in real headless Chromium (Debian's, driven by Playwright): a chosen photo gets a
box with "happy" and seven bars; the camera mode, on Chromium's fake camera playing a clip of the
test photo, draws a label over the video. Skipped, with the reason, where Chromium or Playwright
is missing, except where FER_FLAX_REQUIRE_BROWSER is set (.ci/run sets it): there they must run.
Set FER_FLAX_SCREENSHOTS=DIR to keep the screenshots (docs/images/ holds the docs' ones)."""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_flax.data import fer2013
from fer_flax.serve import loading
from tests import helpers

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
LABEL = rf'^({"|".join(fer2013.EMOTIONS)}) \d+%$'


def _missing() -> str | None:
  try:
    import playwright.sync_api  # noqa: F401
  except ImportError:
    return "Playwright is missing: pip install -e '.[test]'"
  if CHROMIUM is None:
    return "Debian's Chromium is missing: apt-get install chromium"
  return None


def _fake_camera_clip(path: pathlib.Path) -> pathlib.Path:
  """The test photo in a 320x240 Y4M clip, which Chromium's fake camera plays in a loop."""
  frame = np.full((240, 320, 3), 96, np.uint8)
  frame[:, 40:280] = np.asarray(Image.open(helpers.PHOTO).convert('RGB').resize((240, 240)))
  planes = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes()
  with path.open('wb') as out:
    out.write(b'YUV4MPEG2 W320 H240 F10:1 Ip A1:1 C420jpeg\n')
    for _ in range(10):
      out.write(b'FRAME\n' + planes)
  return path


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
  missing = _missing()
  if missing:
    if os.environ.get('FER_FLAX_REQUIRE_BROWSER'):
      pytest.fail(f'FER_FLAX_REQUIRE_BROWSER is set, but {missing}')
    pytest.skip(missing)
  from playwright.sync_api import sync_playwright
  clip = _fake_camera_clip(tmp_path_factory.mktemp('camera') / 'astronaut.y4m')
  # As root (CI) Chromium needs --no-sandbox; the background-networking flags keep it from
  # calling Google's servers, which a closed network refuses.
  args = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
          '--disable-component-update', '--disable-sync', '--use-fake-ui-for-media-stream',
          '--use-fake-device-for-media-stream', f'--use-file-for-fake-video-capture={clip}']
  with sync_playwright() as playwright:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    yield launched
    launched.close()


def _screenshot(page, tmp_path: pathlib.Path, name: str) -> None:
  page.screenshot(path=tmp_path / name, full_page=True)
  keep = os.environ.get('FER_FLAX_SCREENSHOTS')
  if keep:
    pathlib.Path(keep).mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / name, pathlib.Path(keep) / name)


def test_a_chosen_photo_gets_a_box_labelled_happy_and_seven_bars(browser, served, tmp_path):
  from playwright.sync_api import expect
  page = browser.new_page(viewport={'width': 1000, 'height': 700})
  errors = []
  page.on('pageerror', lambda e: errors.append(str(e)))
  page.goto(served[0])
  figure = f"{100 * loading.load_model('pretrained').accuracy:.2f}% on public_test single view"
  expect(page.locator('#model')).to_contain_text(figure)
  expect(page.locator('#model')).to_contain_text('yunet, each averaged with its mirror.')
  page.set_input_files('#photos', str(helpers.PHOTO))
  label = page.locator('.result .frame .box .label')
  expect(label).to_have_text(re.compile(r'^happy \d+%$'), timeout=60_000)
  box = page.locator('.result .frame .box').bounding_box()
  image = page.locator('.result .frame img').bounding_box()
  # The box sits where the server found the face: x 90, width 45 of 256 pixels.
  assert box['x'] - image['x'] == pytest.approx(90 / 256 * image['width'], abs=2)
  assert box['width'] == pytest.approx(45 / 256 * image['width'], abs=2)
  bars = page.locator('.result .face .bar')
  expect(bars).to_have_count(7)
  expect(page.locator('.result .face .bar.top')).to_contain_text('happy')
  expect(page.locator('#status')).to_have_text('1 photo(s), 1 face(s).')
  _screenshot(page, tmp_path, 'serve_photo.png')
  assert not errors


def test_a_refused_photo_shows_the_servers_reason(browser, served, tmp_path):
  from playwright.sync_api import expect
  page = browser.new_page()
  page.goto(served[0])
  (tmp_path / 'notes.jpg').write_text('not a photo')
  page.set_input_files('#photos', str(tmp_path / 'notes.jpg'))
  expect(page.locator('.result .error')).to_have_text('notes.jpg: not an image',
                                                      timeout=60_000)


def test_the_camera_draws_a_label_over_the_video(browser, served, tmp_path):
  from playwright.sync_api import expect
  page = browser.new_page(viewport={'width': 1000, 'height': 600})
  errors = []
  page.on('pageerror', lambda e: errors.append(str(e)))
  page.goto(served[0])
  page.click('#camera-button')
  label = page.locator('#camera-frame .box .label').first
  expect(label).to_have_text(re.compile(LABEL), timeout=60_000)
  expect(page.locator('#camera-faces .face .bar')).to_have_count(7)
  _screenshot(page, tmp_path, 'serve_camera.png')
  page.click('#camera-button')
  expect(page.locator('#camera')).to_be_hidden()
  assert not errors
