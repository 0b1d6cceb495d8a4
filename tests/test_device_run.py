"""The one command for a lent accelerator runs every step end to end (here at toy scale)."""

import json
import subprocess
import sys

from tests import helpers


def _device_run(out, archive, *steps):
  result = subprocess.run(
      [sys.executable, 'benchmarks/device_run.py', *steps, f'--out={out}', f'--data={archive}',
       '--scale=toy', '--best_seeds=1'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_every_step_runs_and_the_summary_gives_each_figure_with_its_command(tmp_path,
                                                                            small_archive):
  out = tmp_path / 'device'
  _device_run(out, small_archive, 'all')
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['device']['count'] >= 1 and summary['scale'] == 'toy'
  rows = {what: (figure, command) for what, figure, command, _ in summary['rows']}
  for name in ('base', 'cpu', 'best', 'fast'):
    figure, command = rows[f'benchmark {name}']
    assert 'MFLOPs/img' in figure and '--config=configs/' in command
  for seed in range(3):
    figure, command = rows[f'fast seed{seed}']
    assert '72%' in figure and f'--config.seed={seed}' in command
  assert rows['best seed0'][0] == 'finished'
  for key in ('fast_seed0-none', 'fast_seed0-tencrop', 'best_seed0-flip', 'fast-ensemble-none'):
    assert rows[f'public_test {key}'][0].endswith('%')
  assert 'status 0' in rows['export'][0] and (out / 'pretrained' / 'model.msgpack').exists()
  assert rows['tests'][0].startswith('1 passed')
  table = (out / 'summary.md').read_text()
  assert table.count('\n| ') == len(summary['rows']) + 1  # header and one row per figure

  # Run again, a finished run is kept as it was measured, not trained again.
  before = json.loads((out / 'fast.json').read_text())
  _device_run(out, small_archive, 'fast')
  assert json.loads((out / 'fast.json').read_text()) == before
