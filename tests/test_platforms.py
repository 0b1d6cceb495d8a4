"""platforms: with libtpu installed and no TPU, JAX starts quietly on the CPU; a TPU host, a GPU
host and a JAX_PLATFORMS the user chose are left alone."""

import os
import subprocess
import sys

import pytest

from fer_flax.core import platforms
from tests import helpers


def test_an_ordinary_start_prints_nothing_but_its_output():
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  result = subprocess.run([sys.executable, '-c', 'import fer_flax, jax; print(jax.devices())'],
                          cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[CpuDevice(id=0)]' and result.stderr == ''


@pytest.mark.parametrize('present, expected', [
    ((), 'cpu'), (('/dev/vfio/[0-9]*',), None), (('/dev/nvidia[0-9]*',), None)])
def test_only_a_host_with_neither_tpu_nor_gpu_is_told_to_use_its_cpu(monkeypatch, present,
                                                                     expected):
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  monkeypatch.setattr(platforms, 'libtpu_installed', lambda: True)
  monkeypatch.setattr(platforms.glob, 'glob', lambda pattern: [pattern] * (pattern in present))
  monkeypatch.setitem(sys.modules, 'jax', None)  # as if JAX were not imported yet
  platforms.skip_absent_tpu()
  assert os.environ.get('JAX_PLATFORMS') == expected


def test_a_choice_the_user_made_is_kept(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')
  monkeypatch.setattr(platforms, 'libtpu_installed', lambda: True)
  monkeypatch.setattr(platforms.glob, 'glob', lambda pattern: [])
  platforms.skip_absent_tpu()
  assert os.environ['JAX_PLATFORMS'] == 'tpu'
