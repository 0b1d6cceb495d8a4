"""The lever screen: `configs/cpu.py` for a fixed few epochs, each lever with two seeds.

  python benchmarks/screen.py --workdir=DIR [--epochs=10] [--seeds=0,1] [--base=LEVER]
      [--data=../shared/data/fer2013/fer2013.zip] [LEVER ...]

Each run trains `configs/cpu.py` for `--epochs` epochs whatever the machine's speed (no time
budget), on the hour's one-cycle shrunk in proportion (warm-up a quarter of the epochs), with the
lever's overrides on top of `--base`'s, then scores its best checkpoint on `public_test` with
`fer_flax.evaluate`. A finished run is skipped and an interrupted one resumes (its wall minutes then
count only the attempt that finished it, marked *), so the command can be run again until the
table is whole. Prints a Markdown table: each lever's accuracy per seed, their mean and spread,
and the wall minutes of its runs; the machine (`lscpu`) heads it. No lever is chosen here:
docs/screen.md says what was kept and why.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Each lever: the overrides that turn it on. `base` is the recipe as configs/cpu.py has it, which
# has had head norm and whitening on since docs/screen.md's runs kept them, and Muon at 0.01 since
# 334f8e9: as levers they now change nothing, and the rows made with them ran before
# (docs/screen.md). `muon_off` measures Muon on the same code; `muon_0.02`, `muon_0.005` its peak.
LEVERS = {
    'base': {},
    'head_norm': {'model.head_norm': True},
    'whiten': {'model.whiten': 2},
    'dirac': {'model.dirac_init': True},
    'lookahead': {'optimizer.lookahead_steps': 5},
    'muon': {'optimizer.muon_learning_rate': 0.01},
    'muon_off': {'optimizer.muon_learning_rate': 0.0},
    'muon_0.02': {'optimizer.muon_learning_rate': 0.02},
    'muon_0.005': {'optimizer.muon_learning_rate': 0.005},
    'muon_ns3': {'optimizer.muon_ns_steps': 3},
    'alternate_flips': {'augment.alternate_flips': True},
    'smoothing_0.2': {'label_smoothing': 0.2},
    'norm_no_scale': {'model.norm_scale': False},
    'clean_last_2': {'augment.clean_last_epochs': 2},
    'lr_0.1': {'optimizer.learning_rate': 0.1},
    'lr_0.025': {'optimizer.learning_rate': 0.025},
}


def _flags(overrides: dict[str, object]) -> list[str]:
  return [f'--config.{k}={v}' for k, v in overrides.items()]


def _run(workdir: pathlib.Path, overrides: dict[str, object], epochs: int,
         data: str) -> tuple[float, bool]:
  """Trains and evaluates one run (resuming it if it was cut short); returns its wall seconds,
  training and evaluation together, and whether it resumed (then the seconds are the last
  attempt's only). A run that finished before returns what it recorded."""
  timing = workdir / 'screen.json'
  if timing.exists():
    record = json.loads(timing.read_text())
    return record['seconds'], record.get('resumed', False)
  resumed = (workdir / 'checkpoints').exists()
  train = [sys.executable, '-m', 'fer_flax.main', '--config=configs/cpu.py',
           f'--workdir={workdir}', f'--config.data.path={data}',
           '--config.time_budget_minutes=0', f'--config.num_epochs={epochs}',
           f'--config.optimizer.warmup_epochs={epochs / 4}', *_flags(overrides)]
  evaluate = [sys.executable, '-m', 'fer_flax.evaluate', f'--workdir={workdir}',
              '--split=public_test']
  start = time.perf_counter()
  for command in (train, evaluate):
    print('$', shlex.join(command), flush=True)
    with open(workdir.parent / f'{workdir.name}.log', 'a') as log:
      subprocess.run(command, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
  seconds = time.perf_counter() - start
  timing.write_text(json.dumps(
      {'seconds': seconds, 'resumed': resumed, 'command': shlex.join(train)}) + '\n')
  return seconds, resumed


def _accuracy(workdir: pathlib.Path) -> float:
  reports = sorted((workdir / 'eval').glob('public_test-step*.json'))
  return json.loads(reports[-1].read_text())['accuracy']


def _machine() -> str:
  lines = subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines()
  fields = dict(line.split(':', 1) for line in lines if ':' in line)
  return (f"{fields.get('Model name', '?').strip()}, family {fields.get('CPU family', '?').strip()}"
          f", {fields.get('CPU(s)', '?').strip()} CPUs")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, type=pathlib.Path)
  parser.add_argument('--epochs', type=int, default=10)
  parser.add_argument('--seeds', default='0,1')
  parser.add_argument('--base', default='base', choices=sorted(LEVERS),
                      help='the lever every run also has on')
  parser.add_argument('--data', default=str(ROOT.parent / 'shared/data/fer2013/fer2013.zip'))
  parser.add_argument('levers', nargs='*', default=['base'], choices=sorted(LEVERS))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  args.workdir.mkdir(parents=True, exist_ok=True)
  rows = []
  for lever in args.levers:
    overrides = {**LEVERS[args.base], **LEVERS[lever]}
    accuracies, seconds, resumed = [], 0.0, False
    name = '+'.join(dict.fromkeys(n for n in (args.base, lever) if n != 'base')) or 'base'
    for seed in seeds:
      workdir = args.workdir / f'{name}_e{args.epochs}_s{seed}'
      run_seconds, run_resumed = _run(workdir, {**overrides, 'seed': seed}, args.epochs,
                                      args.data)
      seconds += run_seconds
      resumed |= run_resumed
      accuracies.append(_accuracy(workdir))
    rows.append((name, ' '.join(_flags(LEVERS[lever])) or '(none)', accuracies, seconds,
                 resumed))
  on_top = ' '.join(_flags(LEVERS[args.base]))
  print(f'\n{args.epochs} epochs, seeds {args.seeds}'
        + (f', every run with `{on_top}`' if on_top else '') + f'; {_machine()}\n')
  print('| lever | overrides | public_test per seed | mean | spread | wall min |')
  print('|---|---|---|---|---|---|')
  for name, flags, accuracies, seconds, resumed in rows:
    per_seed = ', '.join(f'{100 * a:.2f}' for a in accuracies)
    mean = 100 * sum(accuracies) / len(accuracies)
    spread = 100 * (max(accuracies) - min(accuracies))
    wall = f'{seconds / 60:.1f}' + ('*' if resumed else '')
    print(f'| {name} | `{flags}` | {per_seed} | {mean:.2f} | {spread:.2f} | {wall} |')
  if any(row[-1] for row in rows):
    print('\n\\* resumed: the wall minutes count only the attempt that finished it')


if __name__ == '__main__':
  main()
