"""Time to accuracy: evaluations carry their times, and a command reads a run's time to a target."""

import subprocess
import sys

import pytest

from fer_flax import plots, timing
from fer_flax.core.errors import UserError
from fer_flax.train import writers
from tests import helpers


def test_the_timing_command_prints_when_a_run_reached_the_target(finished_run, tmp_path):
  _, workdir, _ = finished_run
  result = subprocess.run([sys.executable, '-m', 'fer_flax.timing', f'--workdir={workdir}',
                           '--accuracy=0.5'], cwd=helpers.REPO, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith(f'{workdir}: ') and '>= 0.5000 at step ' in result.stdout
  assert 's of training' in result.stdout
  records = writers.read_metrics(workdir / writers.METRICS_FILE)
  png = plots.time_png({'run': records}, tmp_path / 'time.png', target=0.5)
  assert png.read_bytes()[:4] == b'\x89PNG'


def test_time_to_accuracy_finds_the_first_evaluation_at_the_target():
  def record(step, accuracy, seconds):
    return {'step': step, 'split': 'public_test', 'accuracy': accuracy,
            'elapsed_seconds': seconds + 5, 'compile_seconds': 2.0, 'train_seconds': seconds}

  records = [record(10, 0.5, 1.0), {'step': 10, 'split': 'train', 'accuracy': 0.9},
             record(20, 0.73, 2.0), record(30, 0.75, 3.0)]
  result = timing.time_to_accuracy(records, 0.72)
  assert result['reached'] and result['record']['step'] == 20 and not result['resumed']
  missed = timing.time_to_accuracy(records, 0.8)
  assert not missed['reached'] and missed['record']['step'] == 30
  assert 'never reached 0.8000; best 0.7500 at step 30' in timing.format_result('run', missed)
  resumed = timing.time_to_accuracy([record(10, 0.5, 9.0), record(20, 0.6, 1.0)], 0.72)
  assert resumed['resumed']
  assert 'times restart' in timing.format_result('run', resumed)
  with pytest.raises(UserError, match='no public_test evaluation'):
    timing.time_to_accuracy(records[1:2], 0.72)
