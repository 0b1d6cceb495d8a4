"""`python -m fer_flax.export`: the formats from the shipped model, and what it asks for."""

import subprocess
import sys

from fer_flax.serve import exported
from tests import helpers


def test_the_cli_exports_the_shipped_model_and_asks_for_what_it_needs(packed_run, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.export', f'--model={packed_run}', '--format=tflite',
       f'--out={tmp_path / "out"}'], cwd=helpers.REPO, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert (tmp_path / 'out' / exported.TFLITE_FILE).stat().st_size > 1000
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.export', '--model=pretrained', '--format=tflite',
       '--quantize=int8', f'--out={tmp_path / "int8"}'], cwd=helpers.REPO, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'fer_flax: error: --quantize=int8 calibrates on training faces; pass '
      '--data=PATH/TO/fer2013.zip')
