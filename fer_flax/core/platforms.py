"""Which accelerators this host has, and a quiet start where libtpu is installed without a TPU.

The `tpu` extra installs libtpu so that `fer_flax.aot` can compile for TPU slices on any host. On a
host without TPUs, JAX would still start libtpu's runtime the first time it looks for devices, and
libtpu prints complaints about TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES (jax-ml/jax#11668).
Where there is neither a TPU nor a GPU, JAX is told to look for CPUs only, as it would end up doing
anyway. A TPU VM, a GPU host, and a JAX_PLATFORMS the user set are left as they are.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

# Device files of TPU chips (v2-v4: accel, v5e and later: vfio) and of GPUs (NVIDIA, WSL2, AMD).
_TPU_DEVICES = ('/dev/accel*', '/dev/vfio/[0-9]*')
_GPU_DEVICES = ('/dev/nvidia[0-9]*', '/dev/nvidiactl', '/dev/dxg', '/dev/kfd')


def _present(patterns: tuple[str, ...]) -> bool:
  return any(glob.glob(pattern) for pattern in patterns)


def has_tpu() -> bool:
  """Whether this host has TPU chips attached."""
  return _present(_TPU_DEVICES)


def libtpu_installed() -> bool:
  """Whether libtpu (the TPU runtime and compiler) can be imported, without importing it."""
  return importlib.util.find_spec('libtpu') is not None


def skip_absent_tpu() -> None:
  """Keeps JAX from starting libtpu's runtime on a host with neither TPUs nor GPUs."""
  if ('JAX_PLATFORMS' in os.environ or not libtpu_installed() or has_tpu()
      or _present(_GPU_DEVICES)):
    return
  os.environ['JAX_PLATFORMS'] = 'cpu'  # For JAX imported after this, and for child processes.
  jax = sys.modules.get('jax')
  if jax is not None and jax.config.jax_platforms is None:
    jax.config.update('jax_platforms', 'cpu')
