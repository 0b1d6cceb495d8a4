"""launch/: every step prints its commands with --dry-run and runs nothing; settings are checked."""

import os
import shlex
import subprocess
import sys

import pytest

from fer_flax.core import platforms
from tests import helpers

_SETTINGS = {'PROJECT_ID': 'my-project', 'ZONE': 'us-central2-b', 'TPU_NAME': 'fer-tpu',
             'GPU_VM_NAME': 'fer-gpu', 'ACCELERATOR_TYPE': 'v4-32', 'BUCKET': 'my-bucket'}
_STEPS = [['create'], ['install'], ['train', '--config=configs/best.py', '--', '--config.seed=3'],
          ['logs'], ['copy', '--workdir=/home/me/run'], ['delete']]


def _launch(tmp_path, script, args, **env):
  """Runs launch/SCRIPT with fake gcloud and git that record each call to tmp_path/calls."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  for tool in ('gcloud', 'git'):
    (bin_dir / tool).write_text(
        f'#!{sys.executable}\nimport shlex, sys\n'
        f'open({str(tmp_path / "calls")!r}, "a")'
        f'.write(shlex.join(["{tool}", *sys.argv[1:]]) + "\\n")\n')
    (bin_dir / tool).chmod(0o755)
  env = {'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'HOME': str(tmp_path), **env}
  result = subprocess.run([sys.executable, f'launch/{script}.py', *args], cwd=helpers.REPO,
                          env=env, capture_output=True, text=True, timeout=60)
  calls = (tmp_path / 'calls').read_text().splitlines() if (tmp_path / 'calls').exists() else []
  return result, calls


@pytest.mark.parametrize('script', ['tpu', 'gpu'])
@pytest.mark.parametrize('step', _STEPS, ids=lambda s: s[0])
def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path, script, step):
  if script == 'tpu' and step[0] == 'train':  # the check compiles here (see the tests below)
    step = [step[0], '--no-check', *step[1:]]
  result, calls = _launch(tmp_path, script, [step[0], '--dry-run', *step[1:]], **_SETTINGS)
  assert result.returncode == 0, result.stderr
  assert calls == []
  lines = result.stdout.splitlines()
  assert lines and all(shlex.split(line)[0] in ('gcloud', 'git') for line in lines)
  if step[0] != 'install':
    assert all('--project=my-project' in line and '--zone=us-central2-b' in line for line in lines)
  # Run for real (with the fake tools), the same commands are executed, in order.
  result, calls = _launch(tmp_path, script, step, **_SETTINGS)
  assert result.returncode == 0, result.stderr
  assert [shlex.split(c) for c in calls] == [shlex.split(line) for line in lines]


def test_tpu_steps_name_the_slice_and_start_the_same_command_on_every_worker(tmp_path):
  outputs = {s[0]: _launch(tmp_path, 'tpu', [s[0], '--dry-run', *s[1:]], **_SETTINGS)[0].stdout
             for s in _STEPS}
  assert 'tpu-vm create fer-tpu' in outputs['create']
  assert '--accelerator-type=v4-32 --version=tpu-ubuntu2204-base' in outputs['create']
  assert '--worker=all' in outputs['install'] and 'jax[tpu]' in outputs['install']
  assert 'gcloud storage cp gs://my-bucket/fer2013.zip' in outputs['install']
  train = outputs['train']
  assert '--worker=all' in train and '--config.distributed.initialize=True' in train
  assert '--workdir=gs://my-bucket/fer_flax/fer-tpu' in train and '--config.seed=3' in train
  assert '--worker=0' in outputs['logs'] and 'tail' in outputs['logs']
  assert 'tpu-vm delete fer-tpu' in outputs['delete']


def test_flags_override_the_environment(tmp_path):
  result, _ = _launch(tmp_path, 'tpu', ['create', '--dry-run', '--zone=europe-west4-a',
                                        '--accelerator-type=v5litepod-16', '--spot'], **_SETTINGS)
  assert '--zone=europe-west4-a' in result.stdout and 'v5litepod-16' in result.stdout
  assert '--spot' in result.stdout


def test_missing_settings_are_named_with_their_flag_and_variable(tmp_path):
  result, calls = _launch(tmp_path, 'tpu', ['train', '--dry-run'], PROJECT_ID='p')
  assert result.returncode != 0 and calls == []
  assert result.stderr.strip() == ('launch: error: --zone is not set (pass it or export ZONE); '
                                   '--name is not set (pass it or export TPU_NAME)')
  result, _ = _launch(tmp_path, 'gpu', ['train', '--dry-run', '--project=p', '--zone=z',
                                        '--name=n'])
  assert 'launch: error: --bucket is not set (pass it or export BUCKET)' in result.stderr


def test_a_failing_command_stops_the_step_with_its_status(tmp_path):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'gcloud').write_text('#!/bin/sh\nexit 3\n')
  (bin_dir / 'gcloud').chmod(0o755)
  result = subprocess.run(
      [sys.executable, 'launch/tpu.py', 'delete'], cwd=helpers.REPO, capture_output=True,
      text=True, timeout=60, env={'PATH': f'{bin_dir}:{os.environ["PATH"]}', **_SETTINGS})
  assert result.returncode == 1
  assert 'launch: error: gcloud exited with status 3' in result.stderr


def test_tpu_train_first_compiles_the_config_for_the_slice_with_the_same_flags(tmp_path):
  result, _ = _launch(tmp_path, 'tpu', ['train', '--dry-run', '--config=configs/best.py', '--',
                                        '--config.seed=3'], **_SETTINGS)
  check, train = result.stdout.splitlines()
  assert shlex.split(check)[1:] == [
      '-m', 'fer_flax.aot', '--config=configs/best.py', '--accelerator_type=v4-32',
      '--config.distributed.initialize=True', '--config.data.pipeline=memory',
      '--config.steps_per_call=10', '--config.seed=3']
  assert train.startswith('gcloud compute tpus tpu-vm ssh')


@pytest.mark.skipif(not platforms.libtpu_installed(), reason="needs libtpu: the 'tpu' extra")
def test_a_config_the_slice_cannot_run_never_reaches_it(tmp_path):
  """`check` compiles for real here; `train` stops at a config that cannot run on the slice."""
  result, calls = _launch(tmp_path, 'tpu', ['check', '--config=configs/tiny.py', '--',
                                            '--config.batch_size=16', '--config.eval_batch_size=16',
                                            '--tta=none'],
                          **{**_SETTINGS, 'ACCELERATOR_TYPE': 'v5litepod-4'})
  assert result.returncode == 0, result.stderr
  assert 'v5litepod-4 (v5e:2x2): 4 x TPU v5 lite' in result.stdout and calls == []
  result, calls = _launch(tmp_path, 'tpu', ['train', '--config=configs/tiny.py'], **_SETTINGS)
  assert result.returncode == 1 and calls == []  # batch 8 over v4-32's 16 chips
  assert 'fer_flax: error: config.batch_size=8 is not divisible by the 16 devices' in result.stderr
  assert 'launch: error:' in result.stderr
