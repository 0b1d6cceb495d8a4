"""The subcommands both launch scripts share, and their settings from flags or the environment.

A target (a Cloud TPU VM or slice, a GPU VM) says how to create and delete its machines and how to
run a command or copy a file on all of its workers; the steps in between are the same for both.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG = '~/train.log'
DATA_NAME = 'fer2013.zip'  # in each worker's home directory


class Runner:
  """Runs commands, or with `dry_run` prints each one as a shell line and runs nothing."""

  def __init__(self, dry_run: bool):
    self.dry_run = dry_run

  def __call__(self, command: Sequence[str], cwd: str | None = None) -> None:
    print(('' if self.dry_run else '+ ') + shlex.join(command), flush=True)
    if not self.dry_run:
      status = subprocess.run(command, cwd=cwd, check=False).returncode
      if status:
        sys.exit(f'launch: error: {command[0]} exited with status {status}; see its output above')


class Target(Protocol):
  """What differs between machine kinds."""
  train_flags: list[str]  # fer_flax.main flags every worker adds (multi-process set-up)
  # A command run on this host, before `train`, that refuses a config the machines cannot run
  # (args: the train step's); None where there is none.
  check: Callable[[argparse.Namespace], list[str]] | None

  def create(self, args: argparse.Namespace) -> list[str]: ...
  def delete(self, args: argparse.Namespace) -> list[str]: ...
  def ssh(self, args: argparse.Namespace, command: str, all_workers: bool) -> list[str]: ...
  def scp(self, args: argparse.Namespace, local: str, remote: str) -> list[str]: ...


class Settings:
  """Flags whose defaults come from environment variables, checked only by the steps that need
  them."""

  def __init__(self):
    self.parser = argparse.ArgumentParser(add_help=False)
    self._env: dict[str, tuple[str, str]] = {}

  def add(self, flag: str, env: str, help_text: str, default: str | None = None) -> None:
    self._env[flag.replace('-', '_')] = (flag, env)
    suffix = f'; default ${env}' + (f', else {default}' if default else '')
    self.parser.add_argument(f'--{flag}', default=os.environ.get(env) or default,
                             help=help_text + suffix)

  def require(self, args: argparse.Namespace, *names: str) -> None:
    missing = [self._env[n] for n in names if not getattr(args, n)]
    if missing:
      sys.exit('launch: error: ' + '; '.join(f'--{flag} is not set (pass it or export {env})'
                                             for flag, env in missing))


def _install_command(extra: str) -> str:
  return ('mkdir -p ~/fer_flax && tar -xzf ~/fer_flax.tar.gz -C ~/fer_flax && cd ~/fer_flax && '
          '{ [ -d .venv ] || python3 -m venv .venv; } && . .venv/bin/activate && '
          f'pip install -q --upgrade pip && pip install -q -e . {shlex.quote(extra)}')


def _train_command(args: argparse.Namespace, target: Target) -> str:
  command = ['python', '-m', 'fer_flax.main', f'--config={args.config}',
             f'--workdir={args.workdir}', *target.train_flags, *args.overrides]
  # Started in the background on every worker; a worker's output goes to its own log.
  return (f'cd ~/fer_flax && . .venv/bin/activate && nohup {shlex.join(command)} '
          f'--config.data.path="$HOME/{DATA_NAME}" > {LOG} 2>&1 < /dev/null &')


def main(target: Target, settings: Settings, description: str, jax_extra: str,
         argv: Sequence[str] | None = None) -> None:
  """Parses the subcommand and runs (or prints, with --dry-run) its commands."""
  settings.add('bucket', 'BUCKET', 'Cloud Storage bucket (no gs://) for the data and workdirs')
  settings.add('data', 'FER2013_URL', 'where the workers fetch fer2013.zip from',
               'gs://$BUCKET/fer2013.zip')
  settings.parser.add_argument('--dry-run', action='store_true',
                               help='print every command instead of running it')
  parser = argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  steps = parser.add_subparsers(dest='step', required=True)
  steps.add_parser('create', parents=[settings.parser], help='create the machines')
  steps.add_parser('install', parents=[settings.parser],
                   help='copy this checkout (its last commit) and FER2013 to every worker')
  train = steps.add_parser('train', parents=[settings.parser],
                           help='start training on every worker with the same command')
  train.add_argument('--workdir', help='default: gs://BUCKET/fer_flax/NAME')
  commands = [train]
  if target.check:
    check = steps.add_parser('check', parents=[settings.parser],
                             help='compile the config for the machines here: does it fit?')
    train.add_argument('--no-check', action='store_true',
                       help='start training without the check that `check` runs')
    commands.append(check)
  for command in commands:
    command.add_argument('--config', default='configs/best.py')
    command.add_argument('overrides', nargs='*', help='more fer_flax.main flags, after --')
  steps.add_parser('logs', parents=[settings.parser], help="follow worker 0's training log")
  copy = steps.add_parser('copy', parents=[settings.parser],
                          help="copy worker 0's workdir (one on its own disk) to the bucket")
  copy.add_argument('--workdir', required=True)
  steps.add_parser('delete', parents=[settings.parser], help='delete the machines')
  args = parser.parse_args(argv)
  run = Runner(args.dry_run)
  if args.step == 'check':
    run(target.check(args), cwd=REPO)
    return
  settings.require(args, 'project', 'zone', 'name')

  if args.step == 'create':
    run(target.create(args))
  elif args.step == 'install':
    settings.require(args, 'bucket')
    archive = os.path.join(tempfile.gettempdir(), f'fer_flax-{args.name}.tar.gz')
    run(['git', '-C', REPO, 'archive', '--format=tar.gz', f'--output={archive}', 'HEAD'])
    run(target.scp(args, archive, '~/fer_flax.tar.gz'))
    data = args.data.replace('$BUCKET', args.bucket)
    run(target.ssh(args, f'{_install_command(jax_extra)} && '
                         f'gcloud storage cp {shlex.quote(data)} ~/{DATA_NAME}', all_workers=True))
  elif args.step == 'train':
    settings.require(args, 'bucket')
    if target.check and not args.no_check:
      run(target.check(args), cwd=REPO)
    args.workdir = args.workdir or f'gs://{args.bucket}/fer_flax/{args.name}'
    run(target.ssh(args, _train_command(args, target), all_workers=True))
  elif args.step == 'logs':
    run(target.ssh(args, f'tail -n +1 -f {LOG}', all_workers=False))
  elif args.step == 'copy':
    settings.require(args, 'bucket')
    destination = f'gs://{args.bucket}/fer_flax/{args.name}/'
    run(target.ssh(args, f'gcloud storage cp -r {args.workdir} {destination}',
                   all_workers=False))
  elif args.step == 'delete':
    run(target.delete(args))
