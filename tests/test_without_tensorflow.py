"""Every command works where TensorFlow cannot be imported (accelerator hosts often lack it)."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tests import helpers


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
  """`python -m MODULE ARGS` with TensorFlow, TFDS and TensorBoard blocked; must succeed."""
  result = subprocess.run([sys.executable, '-m', 'tests.without_tensorflow', module, *args],
                          cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.rstrip().endswith('LOADED []'), result.stdout[-2000:]
  return result


def test_train_evaluate_ensemble_export_predict_plot_and_benchmark(tmp_path, small_archive,
                                                                    finished_run):
  run = tmp_path / 'run'
  _run('fer_flax.main', *helpers.main_command(run, {
      'data.path': small_archive, 'data.pipeline': 'memory', 'steps_per_call': 4})[3:])

  _run('fer_flax.evaluate', f'--workdir={run}', '--tta=flip')
  report = json.loads((run / 'eval' / 'public_test-step34-flip.json').read_text())
  assert report['examples'] == 28 and report['tta'] == 'flip'

  # The fixture's run was trained on tf.data: without TensorFlow it is scored in memory.
  ensemble = tmp_path / 'ensemble.json'
  _run('fer_flax.evaluate', f'--workdir={run},{finished_run[1]}', f'--json={ensemble}',
       f'--data={small_archive}')
  report = json.loads(ensemble.read_text())
  assert len(report['members']) == 2 and report['examples'] == 28

  exported = tmp_path / 'exported'
  _run('fer_flax.export', f'--workdir={run}', f'--out={exported}')
  face = tmp_path / 'face.png'
  Image.fromarray(helpers.face(3, np.random.default_rng(0))).save(face)
  predicted = _run('fer_flax.predict', f'--model={exported}', '--no-detect', '--json', str(face))
  row = json.loads(predicted.stdout.splitlines()[0])
  assert row['file'] == str(face) and len(row['probabilities']) == 7

  curves = tmp_path / 'curves.png'
  _run('fer_flax.plots', 'curves', f'--workdir={run}', f'--out={curves}')
  assert curves.read_bytes()[:4] == b'\x89PNG'

  bench = tmp_path / 'bench.json'
  _run('fer_flax.benchmark', '--config=configs/tiny.py', '--steps=2', '--keras=',
       f'--json={bench}', f'--config.data.path={small_archive}')
  assert json.loads(bench.read_text())['input']['images_per_sec'] > 0
