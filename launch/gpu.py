"""A multi-GPU Compute Engine VM: create, install, train, follow logs, copy, delete.

  export PROJECT_ID=my-project ZONE=us-central1-a GPU_VM_NAME=fer BUCKET=my-bucket
  python launch/gpu.py create --machine-type=a2-highgpu-8g
  python launch/gpu.py install                # this checkout's last commit, jax[cuda12], FER2013
  python launch/gpu.py train --config=configs/best.py
  python launch/gpu.py logs
  python launch/gpu.py delete

One process drives all of the VM's GPUs (one `data` mesh axis across them), so no multi-process
set-up is needed; for several GPU hosts see README.md, "Single device, several devices, several
hosts". --dry-run prints the commands instead of running them.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ''):  # `python launch/gpu.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top


class GpuVm:
  """A Compute Engine VM with GPUs (A2/A3 machine types carry theirs), via `gcloud compute`."""
  train_flags = ['--config.data.pipeline=memory', '--config.steps_per_call=10']
  check = None  # fer_flax.aot compiles for TPU slices only (docs/tpu_compile.md, GPUs)

  @staticmethod
  def _where(args: argparse.Namespace) -> list[str]:
    return [f'--project={args.project}', f'--zone={args.zone}']

  def create(self, args: argparse.Namespace) -> list[str]:
    spot = ['--provisioning-model=SPOT'] if args.spot else []
    return ['gcloud', 'compute', 'instances', 'create', args.name, *self._where(args),
            f'--machine-type={args.machine_type}', f'--image-family={args.image_family}',
            '--image-project=deeplearning-platform-release', '--maintenance-policy=TERMINATE',
            '--boot-disk-size=200GB', '--metadata=install-nvidia-driver=True',
            '--scopes=cloud-platform', *spot]

  def delete(self, args: argparse.Namespace) -> list[str]:
    return ['gcloud', 'compute', 'instances', 'delete', args.name, *self._where(args), '--quiet']

  def ssh(self, args: argparse.Namespace, command: str, all_workers: bool) -> list[str]:
    del all_workers  # one VM
    return ['gcloud', 'compute', 'ssh', args.name, *self._where(args), f'--command={command}']

  def scp(self, args: argparse.Namespace, local: str, remote: str) -> list[str]:
    return ['gcloud', 'compute', 'scp', local, f'{args.name}:{remote}', *self._where(args)]


def settings() -> common.Settings:
  s = common.Settings()
  s.add('project', 'PROJECT_ID', 'Google Cloud project')
  s.add('zone', 'ZONE', 'zone of the VM')
  s.add('name', 'GPU_VM_NAME', 'name of the VM')
  s.add('machine-type', 'MACHINE_TYPE', 'a machine type with GPUs', 'a2-highgpu-8g')
  s.add('image-family', 'IMAGE_FAMILY', 'a Deep Learning VM image family with CUDA drivers',
        'common-cu128-ubuntu-2204-nvidia-570')
  s.parser.add_argument('--spot', action='store_true', help='create: a Spot (preemptible) VM')
  return s


if __name__ == '__main__':
  common.main(GpuVm(), settings(), __doc__, jax_extra='jax[cuda12]')
