"""`python -m fer_flax.predict`: JSON, CSV and table output, the exit status, no TensorFlow."""

import json
import os
import pathlib
import subprocess
import sys

from fer_flax.data import fer2013
from tests import helpers


def _cli(args, cwd):
  """Runs the CLI where TensorFlow cannot be imported: prediction must not need it."""
  blocker = cwd / 'blocker' / 'tensorflow'
  blocker.mkdir(parents=True, exist_ok=True)
  (blocker / '__init__.py').write_text('raise ImportError("TensorFlow is blocked in this test")')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(blocker.parent)}
  return subprocess.run([sys.executable, '-m', 'fer_flax.predict', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_formats_exit_status_and_no_tensorflow(packed_run, tmp_path):
  (tmp_path / 'in').mkdir()
  folder = helpers.bad_files(tmp_path / 'in')
  result = _cli([f'--model={packed_run}', '--json', str(folder)], tmp_path)
  assert result.returncode == 1, result.stderr[-2000:]  # some files failed
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  good = [r for r in rows if 'error' not in r]
  assert len(good) == 1 and good[0]['file'].endswith('good.jpg') and len(good[0]['box']) == 4
  assert sorted(pathlib.Path(r['file']).name for r in rows if 'error' in r) == [
      'notes.txt', 'sky.png', 'truncated.jpg']
  assert 'fer_flax: ' in result.stderr and 'notes.txt: not an image' in result.stderr

  result = _cli([f'--model={packed_run}', '--csv', str(helpers.PHOTO)], tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  header, row = result.stdout.strip().splitlines()
  assert header.split(',')[:8] == ['file', 'face', 'x', 'y', 'width', 'height', 'emotion',
                                   'confidence']
  assert row.split(',')[6] in fer2013.EMOTIONS

  result = _cli([f'--model={packed_run}', '--nodetect', str(helpers.PHOTO)], tmp_path)
  assert result.returncode == 0 and 'whole image' in result.stdout
