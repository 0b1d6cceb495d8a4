"""Cloud TPU VMs and slices: create, install on every worker, train, follow logs, copy, delete.

  export PROJECT_ID=my-project ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 TPU_NAME=fer \
      BUCKET=my-bucket
  python launch/tpu.py create
  python launch/tpu.py install                # this checkout's last commit, jax[tpu], FER2013
  python launch/tpu.py check --config=configs/best.py   # compiles it for the slice here
  python launch/tpu.py train --config=configs/best.py -- --config.seed=1
  python launch/tpu.py logs
  python launch/tpu.py delete

Every worker runs the same command; JAX finds the other workers of the slice itself
(--config.distributed.initialize=True). The workdir defaults to gs://BUCKET/fer_flax/TPU_NAME, which
every worker can reach, as a multi-host checkpoint needs. `train` first compiles the config for the
slice on this host (`check`: `python -m fer_flax.aot`, the `tpu` extra) and stops there if it cannot
run on it; --no-check skips that. --dry-run prints the commands instead.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ''):  # `python launch/tpu.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # pylint: disable=g-import-not-at-top


class CloudTpu:
  """A TPU VM or slice, reached through `gcloud compute tpus tpu-vm`."""
  train_flags = ['--config.distributed.initialize=True', '--config.data.pipeline=memory',
                 '--config.steps_per_call=10']

  @staticmethod
  def _where(args: argparse.Namespace) -> list[str]:
    return [f'--project={args.project}', f'--zone={args.zone}']

  def check(self, args: argparse.Namespace) -> list[str]:
    """fer_flax.aot here, for the slice and with the flags `train` gives every worker."""
    return [sys.executable, '-m', 'fer_flax.aot', f'--config={args.config}',
            f'--accelerator_type={args.accelerator_type}', *self.train_flags, *args.overrides]

  def create(self, args: argparse.Namespace) -> list[str]:
    spot = ['--spot'] if args.spot else []
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', args.name, *self._where(args),
            f'--accelerator-type={args.accelerator_type}', f'--version={args.version}', *spot]

  def delete(self, args: argparse.Namespace) -> list[str]:
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', args.name, *self._where(args),
            '--quiet']

  def ssh(self, args: argparse.Namespace, command: str, all_workers: bool) -> list[str]:
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', args.name, *self._where(args),
            f'--worker={"all" if all_workers else 0}', f'--command={command}']

  def scp(self, args: argparse.Namespace, local: str, remote: str) -> list[str]:
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', local, f'{args.name}:{remote}',
            *self._where(args), '--worker=all']


def settings() -> common.Settings:
  s = common.Settings()
  s.add('project', 'PROJECT_ID', 'Google Cloud project')
  s.add('zone', 'ZONE', 'zone of the TPU')
  s.add('name', 'TPU_NAME', 'name of the TPU VM or slice')
  s.add('accelerator-type', 'ACCELERATOR_TYPE', 'TPU type and size, e.g. v4-8, v5litepod-16',
        'v4-8')
  s.add('version', 'RUNTIME_VERSION', 'TPU software version', 'tpu-ubuntu2204-base')
  s.parser.add_argument('--spot', action='store_true', help='create: a Spot (preemptible) TPU')
  return s


if __name__ == '__main__':
  common.main(CloudTpu(), settings(), __doc__, jax_extra='jax[tpu]')
