"""SIGTERM (a preemption notice) saves the finished steps and exits; the same command resumes."""

import pathlib
import signal
import subprocess

import jax
import numpy as np

from fer_flax.train import loop, preemption, writers
from tests import helpers

_OVERRIDES = {'data.pipeline': 'memory', 'data.tfds_data_dir': '', 'num_epochs': 4,
              'log_every_steps': 1, 'optimizer.learning_rate': 3e-3, 'augment.flip': True,
              'ema_decay': 0.9}


def _command(archive, workdir):
  return helpers.main_command(workdir, {**_OVERRIDES, 'data.path': archive})


def _train_steps(workdir: pathlib.Path) -> list[int]:
  path = workdir / writers.METRICS_FILE
  if not path.exists():
    return []
  return [r['step'] for r in writers.read_metrics(path) if r['split'] == 'train']


def test_sigterm_checkpoints_every_finished_step_and_the_rerun_resumes_there(tmp_path,
                                                                             small_archive):
  workdir = tmp_path / 'preempted'
  proc = subprocess.Popen(_command(small_archive, workdir), cwd=helpers.REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  # metrics.jsonl is brought up to date at each checkpoint, the first at the end of epoch 1.
  helpers.signal_when(lambda: bool(_train_steps(workdir)), proc, helpers.TERM, timeout=240)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == preemption.EXIT_STATUS, stderr[-3000:]
  saved = max(helpers.checkpoint_steps(workdir))
  assert 17 <= saved < 68, 'the signal must arrive mid-run for this test to mean anything'
  assert max(_train_steps(workdir)) <= saved  # every step that finished is in the checkpoint
  assert f'preempted: checkpoint saved at step {saved}' in stderr

  rerun = subprocess.run(_command(small_archive, workdir), cwd=helpers.REPO,
                         capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'resuming at step {saved}' in rerun.stderr
  config = helpers.tiny_config(small_archive, pathlib.Path(''), **_OVERRIDES)
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  resumed = loop.train_and_evaluate(config, str(workdir))  # finished: restores the last step
  assert int(resumed.step) == int(straight.step) == 68
  for part in ('params', 'opt_state', 'ema'):
    jax.tree.map(np.testing.assert_array_equal, getattr(resumed, part), getattr(straight, part))
  assert _train_steps(workdir) == _train_steps(tmp_path / 'straight')


def test_without_a_signal_the_watch_never_stops_a_run_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.Watch() as watch:
    assert signal.getsignal(signal.SIGTERM) is not before
    assert not any(watch.reached(call) for call in range(5))
    signal.raise_signal(signal.SIGTERM)
    assert watch.reached(5)
  assert signal.getsignal(signal.SIGTERM) is before

