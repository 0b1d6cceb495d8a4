"""What the tests share: synthetic FER2013 archives, folders and CSVs they build themselves, the
tiny config on them, and ways to run commands and signal them."""

from __future__ import annotations

import csv
import io
import os
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTO = REPO / 'tests' / 'data' / 'astronaut.jpg'  # NASA, public domain
SHARED_ARCHIVE = REPO.parent / 'shared' / 'data' / 'fer2013' / 'fer2013.zip'
if str(REPO) not in sys.path:  # `configs` is a folder of the repo, not of the package.
  sys.path.insert(0, str(REPO))

FOLDERS = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')  # label id order
USAGE_PREFIX = {'Training': 'Training_', 'PublicTest': 'PublicTest_', 'PrivateTest': 'PrivateTest_'}


def run_on_eight_cpu_devices(function: Callable[[], None]) -> None:
  """Calls a test module's `function` in a process with 8 simulated CPU devices.

  JAX fixes its device count when it starts, so this cannot happen in the test's own process.
  """
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'JAX_PLATFORMS': 'cpu'}
  call = f'import {function.__module__} as m; m.{function.__name__}()'
  result = subprocess.run([sys.executable, '-c', call], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]


def main_command(workdir: pathlib.Path, overrides: dict[str, object],
                 module: str = 'fer_flax.main') -> list[str]:
  """`python -m fer_flax.main` on configs/tiny.py with `--config.KEY=VALUE` overrides."""
  return [sys.executable, '-m', module, '--config=configs/tiny.py', f'--workdir={workdir}',
          *[f'--config.{k}={v}' for k, v in overrides.items()]]


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  """The steps of a workdir's finished checkpoints, in order."""
  return sorted(int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit())


def signal_when(ready: Callable[[], bool], target: subprocess.Popen, signum: int,
                others: tuple[subprocess.Popen, ...] = (), timeout: float = 300) -> None:
  """Sends `signum` to `target` once `ready()` holds (or any of the processes has ended, or the
  time is up), so a test can interrupt a run at a chosen point of its progress."""
  deadline = time.time() + timeout
  while (time.time() < deadline and all(p.poll() is None for p in (target, *others))
         and not ready()):
    time.sleep(0.02)
  target.send_signal(signum)


KILL, TERM = signal.SIGKILL, signal.SIGTERM


def face(label: int, rng: np.random.Generator) -> np.ndarray:
  """A learnable 48x48 image: a bright band whose row depends on the label, plus noise."""
  image = rng.integers(0, 80, size=(48, 48)).astype(np.uint8)
  image[label * 6 + 3: label * 6 + 9, :] = rng.integers(170, 255)
  return image


def make_examples(counts: dict[str, int], seed: int = 0) -> list[tuple[str, int, np.ndarray]]:
  """(Usage, label, image) with `counts[usage]` images per class."""
  rng = np.random.default_rng(seed)
  return [(usage, label, face(label, rng))
          for usage, n in counts.items() for label in range(7) for _ in range(n)]


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='PNG')
  return buf.getvalue()


def _member_names(examples, prefixes: bool = True):
  for i, (usage, label, image) in enumerate(examples):
    folder = 'train' if usage == 'Training' else 'test'
    prefix = USAGE_PREFIX[usage] if prefixes else ''
    yield f'{folder}/{FOLDERS[label]}/{prefix}{i:05d}.png', image


def write_zip(path: pathlib.Path, examples, prefixes: bool = True) -> pathlib.Path:
  with zipfile.ZipFile(path, 'w') as z:
    for name, image in _member_names(examples, prefixes):
      z.writestr(name, _png(image))
  return path


def write_folder(path: pathlib.Path, examples, prefixes: bool = True) -> pathlib.Path:
  for name, image in _member_names(examples, prefixes):
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_bytes(_png(image))
  return path


def write_csv(path: pathlib.Path, examples) -> pathlib.Path:
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['emotion', 'pixels', 'Usage'])
    for usage, label, image in examples:
      w.writerow([label, ' '.join(str(v) for v in image.ravel()), usage])
  return path


def tiny_config(archive: pathlib.Path, tfds_dir: pathlib.Path, **overrides):
  """configs/tiny.py pointed at the synthetic data."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.data.path = str(archive)
  config.data.tfds_data_dir = str(tfds_dir)
  config.optimizer.learning_rate = 3e-3
  config.update_from_flattened_dict(overrides)
  return config


def eval_records(workdir: pathlib.Path, split: str) -> list[dict]:
  """A run's evaluation records of `split`, from its metrics.jsonl."""
  from fer_flax.train import writers  # pylint: disable=g-import-not-at-top
  return [r for r in writers.read_metrics(pathlib.Path(workdir) / writers.METRICS_FILE)
          if r['split'] == split]


def best_record(workdir: pathlib.Path) -> dict:
  """The best public_test record; among equals, the latest (as orbax ranks them)."""
  return max(eval_records(workdir, 'public_test'), key=lambda r: (r['accuracy'], r['step']))


REPORT_NAMES = ('a', 'b', 'c')


def full_report() -> dict:
  """An evaluation report of three classes, as evaluate writes it."""
  from fer_flax.train import report  # pylint: disable=g-import-not-at-top
  r = report.classification_report([[5, 1, 0], [2, 6, 1], [0, 1, 9]], REPORT_NAMES)
  return {'split': 'public_test', 'step': 7, 'tta': 'flip', 'examples': 25, 'loss': 0.5, **r}


def memory_config(archive: pathlib.Path, **overrides):
  """configs/tiny.py on the in-memory input (no TFDS folder) of the synthetic data."""
  return tiny_config(archive, pathlib.Path(''), **{
      'data.pipeline': 'memory', 'data.tfds_data_dir': '', **overrides})


def bad_files(folder: pathlib.Path) -> pathlib.Path:
  """A folder of what users feed prediction: a text file, a truncated JPEG, a photo without a
  face, and one good photo."""
  import shutil  # pylint: disable=g-import-not-at-top
  (folder / 'notes.txt').write_text('not a photo')
  data = PHOTO.read_bytes()
  (folder / 'truncated.jpg').write_bytes(data[:len(data) // 3])
  Image.new('RGB', (200, 200), (30, 120, 200)).save(folder / 'sky.png')
  shutil.copy(PHOTO, folder / 'good.jpg')
  return folder


def free_port() -> int:
  """A TCP port nobody listens on now."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def png_header_only(width: int, height: int) -> bytes:
  """A PNG that claims `width` x `height` pixels and holds none: huge dimensions in a few bytes."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))
  header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IEND', b'')


def photo_as(fmt: str, mode: str | None = None) -> bytes:
  """The test photo saved as `fmt` in `mode` (16-bit grayscale: 'I;16')."""
  image = Image.open(PHOTO)
  if mode == 'I;16':
    gray = np.asarray(image.convert('L'), np.uint16) * 257
    image = Image.fromarray(gray)
  elif mode is not None:
    image = image.convert(mode)
  out = io.BytesIO()
  image.save(out, fmt)
  return out.getvalue()


def bad_requests() -> list[tuple[str, dict, int, str]]:
  """(what, httpx request arguments for POST /v1/predict, status, part of the message) for each
  kind of request the server must refuse."""
  jpeg = {'Content-Type': 'image/jpeg'}
  photo = PHOTO.read_bytes()
  gray = io.BytesIO()
  Image.new('L', (200, 200), 128).save(gray, 'PNG')
  floats = io.BytesIO()
  Image.fromarray(np.full((64, 64), 0.5, np.float32)).save(floats, 'TIFF')
  return [
      ('empty body', dict(content=b'', headers=jpeg), 400, 'empty'),
      ('not an image', dict(content=b'hello, world\n' * 10, headers=jpeg), 415, 'not an image'),
      ('truncated', dict(content=photo[:len(photo) // 2], headers=jpeg), 400, 'truncated'),
      ('huge dimensions', dict(content=png_header_only(30000, 30000),
                               headers={'Content-Type': 'image/png'}), 413, 'megapixels'),
      ('too large a body', dict(content=bytes(21 * 2**20), headers=jpeg), 413, 'MB limit'),
      ('wrong content type', dict(content=photo, headers={'Content-Type': 'text/plain'}), 415,
       'content type'),
      ('no face', dict(content=gray.getvalue(), headers={'Content-Type': 'image/png'}), 422,
       'no face'),
      ('floating-point pixels', dict(content=floats.getvalue(),
                                     headers={'Content-Type': 'image/tiff'}), 415, 'floating'),
      ('a form without files', dict(files={'note': (None, 'no photo')}), 400, 'no files'),
      ('an empty file', dict(files={'file': ('a.jpg', b'')}), 400, 'a.jpg: the file is empty'),
      ('a bad flag', dict(content=photo, headers=jpeg, params={'detect': 'perhaps'}), 422,
       'detect'),
  ]
