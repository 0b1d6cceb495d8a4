"""Two processes on this machine train as one: equal to one process, resumable after a kill."""

import os
import pathlib
import socket
import subprocess

import jax
import numpy as np
import pytest

from fer_flax.train import preemption, workdirs, writers
from tests import helpers

_STEPS = 51  # 3 epochs of 140 // 8 steps
_OVERRIDES = {'data.pipeline': 'memory', 'data.tfds_data_dir': '', 'num_epochs': 3,
              'checkpoint_every_steps': 5, 'keep_checkpoints': 100, 'augment.flip': True,
              'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.05}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(archive, workdir: pathlib.Path, process_id: int | None = None, port: int = 0,
           devices: int = 1) -> subprocess.Popen:
  """`fer_flax.main` as process `process_id` of 2, or as one process with `devices` CPUs."""
  overrides = {**_OVERRIDES, 'data.path': archive}
  if process_id is not None:
    overrides.update({'distributed.initialize': True, 'distributed.num_processes': 2,
                      'distributed.coordinator_address': f'localhost:{port}',
                      'distributed.process_id': process_id})
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  workdir.mkdir(parents=True, exist_ok=True)
  log = open(_log(workdir, process_id), 'a')  # pylint: disable=consider-using-with
  return subprocess.Popen(helpers.main_command(workdir, overrides), cwd=helpers.REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=log)


def _log(workdir: pathlib.Path, process_id: int | None) -> pathlib.Path:
  return workdir.parent / f'{workdir.name}.{"" if process_id is None else process_id}.log'


def _two_processes(archive, workdir) -> list[subprocess.Popen]:
  port = _free_port()
  return [_start(archive, workdir, i, port) for i in range(2)]


def _finish(procs, workdir, timeout=600):
  for proc in procs:
    proc.wait(timeout=timeout)
  logs = [_log(workdir, i).read_text() for i in (0, 1)]
  assert [p.returncode for p in procs] == [0] * len(procs), '\n'.join(log[-2000:] for log in logs)
  return logs


def _signal_at_checkpoint(procs, workdir, step: int, signum: int) -> None:
  """Sends `signum` to process 1 once a checkpoint at `step` or later exists."""
  helpers.signal_when(lambda: max(helpers.checkpoint_steps(workdir), default=0) >= step,
                       procs[1], signum, others=(procs[0],))


def _final(workdir) -> dict:
  """The last step's parameters, restored here (one device) from a run on two."""
  _, variables, _ = workdirs.restore_variables(workdir, step=_STEPS)
  return variables


def _records(workdir, split):
  return [r for r in writers.read_metrics(workdir / writers.METRICS_FILE) if r['split'] == split]


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory, small_archive):
  workdir = tmp_path_factory.mktemp('distributed') / 'two'
  _finish(_two_processes(small_archive, workdir), workdir)
  return workdir


def test_two_processes_train_as_one_process_with_their_devices(tmp_path, small_archive,
                                                                two_process_run):
  one = tmp_path / 'one'
  proc = _start(small_archive, one, devices=2)  # the same 2-device mesh in one process
  proc.wait(timeout=600)
  assert proc.returncode == 0, _log(one, None).read_text()[-3000:]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               _final(two_process_run)['params'], _final(one)['params'])
  # Process 0 alone writes metrics; evaluation counts each example once across processes.
  evals = _records(two_process_run, 'public_test')
  assert [r['step'] for r in evals] == [17, 34, 51]
  for ours, theirs in zip(evals, _records(one, 'public_test'), strict=True):
    assert ours['accuracy'] == theirs['accuracy']
    assert ours['loss'] == pytest.approx(theirs['loss'], rel=1e-4)
  assert len(_records(two_process_run, 'train')) == len(_records(one, 'train'))


def test_after_one_process_is_killed_the_restarted_run_resumes_from_its_last_checkpoint(
    tmp_path, small_archive, two_process_run):
  workdir = tmp_path / 'killed'
  procs = _two_processes(small_archive, workdir)
  _signal_at_checkpoint(procs, workdir, 10, helpers.KILL)
  procs[0].kill()  # As a scheduler would: the job lost a worker, so it restarts every process.
  for proc in procs:
    proc.wait()
  last = max(helpers.checkpoint_steps(workdir))
  assert 10 <= last < _STEPS, 'the kill must land mid-run for this test to mean anything'

  logs = _finish(_two_processes(small_archive, workdir), workdir)
  assert all(f'resuming at step {last}' in log for log in logs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               _final(workdir)['params'], _final(two_process_run)['params'])
  steps = [r['step'] for r in _records(workdir, 'train')]
  assert steps == sorted(set(steps)) == [r['step'] for r in _records(two_process_run, 'train')]


def test_sigterm_to_one_process_stops_both_at_one_checkpoint_and_the_rerun_resumes_there(
    tmp_path, small_archive, two_process_run):
  workdir = tmp_path / 'preempted'
  procs = _two_processes(small_archive, workdir)
  _signal_at_checkpoint(procs, workdir, 5, helpers.TERM)  # JAX's sync manager tells process 0
  for proc in procs:
    proc.wait(timeout=300)
  logs = [_log(workdir, i).read_text() for i in (0, 1)]
  assert [p.returncode for p in procs] == [preemption.EXIT_STATUS] * 2, logs[1][-3000:]
  last = max(helpers.checkpoint_steps(workdir))
  assert 5 <= last < _STEPS
  assert all(f'checkpoint saved at step {last}' in log for log in logs)

  logs = _finish(_two_processes(small_archive, workdir), workdir)
  assert all(f'resuming at step {last}' in log for log in logs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               _final(workdir)['params'], _final(two_process_run)['params'])
