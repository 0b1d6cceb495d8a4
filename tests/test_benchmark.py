"""The benchmark CLI and its Keras peer run and report every figure."""

import json
import subprocess
import sys

import pytest

from tests import helpers


def test_benchmark_reports_train_eval_input_and_memory(tmp_path, small_archive):
  out = tmp_path / 'bench.json'
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.benchmark', '--config=configs/tiny.py', '--steps=4',
       f'--json={out}', '--keras=', f'--config.data.path={small_archive}',
       '--config.data.pipeline=memory', '--config.steps_per_call=2'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report['device']['count'] == 1 and report['device']['platform'] == 'cpu'
  assert report['train']['steps_per_call'] == 2
  for part in ('train', 'eval', 'input'):
    assert report[part]['images_per_sec'] > 0
  assert report['train']['compile_seconds'] > 0
  assert report['train']['flops_per_image'] > 0 and report['eval']['flops_per_image'] > 0
  assert report['train']['flops_per_sec'] > 0 and 'bf16_peak_fraction' not in report['train']
  assert report['memory']['peak_host_bytes'] > 0
  assert 'train:' in result.stdout and 'images/s' in result.stdout


def test_keras_peer_trains_the_same_network():
  pytest.importorskip('keras')
  from fer_flax import benchmark  # pylint: disable=g-import-not-at-top
  peer = benchmark.keras_peer('tensorflow', benchmark.synthetic_batches(4, 8), warmup=2)
  assert peer['parameters'] == 9_515_783  # seed_cnn's count, layer for layer
  assert peer['backend'] == 'tensorflow' and peer['images_per_sec'] > 0
