"""Everything an accelerator host should measure, in steps that each end inside a time budget.

  python benchmarks/device_run.py STEP [STEP ...] --out=DIR --data=PATH/TO/fer2013.zip
      [--budget_seconds=540] [--best_seeds=3] [--scale=full|toy]

Steps, in the order `all` runs them:
  tests      the tests that exercise what differs on a device (bfloat16, scan against unrolled
             steps, resume and preemption, data-parallel equality) and need no TensorFlow
  benchmark  `fer_flax.benchmark` of configs base, cpu, best and fast (images/s, FLOPs, peak share)
  fast       configs/fast.py for seeds 0, 1, 2, and each run's time to 72% public_test
  best       configs/best.py for as many seeds as the budget allows; a run cut off by the budget is
             stopped by SIGTERM at a checkpoint, and the same step resumes it
  evaluate   every finished run with and without TTA, and the ensembles of the best.py runs
  export     the finished run that scores best on public_test, as a package model, if it fits
  summary    OUT/summary.json and OUT/summary.md: every figure with its command and wall time

Each step runs the package's own commands (`python -m fer_flax.main`, `.evaluate`, ...) as
subprocesses, writes OUT/STEP.json, and can be run again: finished work is skipped. `--scale=toy`
shrinks every model and run so that a CPU does all of it in minutes (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_flax import timing
from fer_flax.train import writers  # pylint: disable=g-import-not-at-top,wrong-import-position

STEPS = ('tests', 'benchmark', 'fast', 'best', 'evaluate', 'export', 'summary')
BENCHMARKED = ('base', 'cpu', 'best', 'fast')
TARGET = 0.72
DEVICE_TESTS = (
    'tests/test_layers.py', 'tests/test_on_device.py', 'tests/test_preemption.py',
    'tests/test_mesh.py',
    'tests/test_step_fns.py::test_bfloat16_computes_in_bfloat16_on_float32_parameters',
    'tests/test_step_fns.py::test_the_moving_average_follows_its_formula_and_evaluation_uses_it',
    'tests/test_loop.py::'
    'test_a_diverging_run_stops_with_one_line_naming_the_steps_and_keeps_its_good_checkpoints',
)
TOY_TEST = 'tests/test_layers.py::test_sum_over_leading_axes'
_VGG_TOY = {'model.stages': '((4,),(8,))', 'model.hidden': '(8,)', 'model.dtype': 'float32'}
TOY = {  # Per config: what shrinks it to a CPU's minutes (base's toy is configs/tiny.py).
    'base': {'data.pipeline': 'memory'},  # and no TFDS folder of the user's touched
    'cpu': {**_VGG_TOY, 'batch_size': 16},
    'best': {**_VGG_TOY, 'batch_size': 16, 'eval_batch_size': 32},
    'fast': {**_VGG_TOY, 'batch_size': 16, 'eval_batch_size': 32},
}
TOY_EPOCHS = 2


class Runner:
  """Runs the package's commands for one output folder, within one step's time budget."""

  def __init__(self, args: argparse.Namespace):
    self.out = pathlib.Path(args.out).absolute()
    self.data = str(pathlib.Path(args.data).absolute())
    self.toy = args.scale == 'toy'
    self.best_seeds = args.best_seeds
    self.budget = args.budget_seconds
    self.deadline = 0.0
    (self.out / 'runs').mkdir(parents=True, exist_ok=True)

  def remaining(self) -> float:
    return self.deadline - time.monotonic()

  def overrides(self, name: str, **extra: Any) -> list[str]:
    """`--config.*` flags for config `name`: the data, toy sizes, and `extra`."""
    values = {'data.path': self.data, **(TOY[name] if self.toy else {}), **extra}
    if self.toy and name in ('fast', 'best'):
      values.setdefault('num_epochs', TOY_EPOCHS)
    return [f'--config.{k}={v}' for k, v in values.items()]

  def run(self, name: str, args: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Runs `python ARGS` in the repo; returns its command, status, wall time and output tail.

    Past `timeout` (default: what is left of the step's budget) it gets SIGTERM, which training
    answers by saving a checkpoint and exiting with status 143.
    """
    timeout = self.remaining() if timeout is None else min(timeout, self.remaining())
    command = [sys.executable, *args]
    log = self.out / 'logs' / f'{name}.log'
    log.parent.mkdir(exist_ok=True)
    start = time.monotonic()
    with open(log, 'w') as f:
      proc = subprocess.Popen(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, text=True)
      try:
        proc.wait(timeout=max(timeout, 1))
      except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    text = log.read_text()
    return {'command': ' '.join(['python', *args]), 'returncode': proc.returncode,
            'wall_seconds': round(time.monotonic() - start, 1), 'log': str(log),
            'tail': text[-1500:]}

  def workdir(self, name: str, seed: int) -> pathlib.Path:
    return self.out / 'runs' / f'{name}_seed{seed}'

  def train(self, name: str, seed: int) -> dict[str, Any]:
    """Trains (or resumes) config `name` with `seed`; a run an earlier call finished is kept."""
    earlier = (_json(self, name) or {}).get(f'seed{seed}', {})
    if earlier.get('finished'):
      return earlier
    workdir = self.workdir(name, seed)
    result = self.run(f'train_{name}_seed{seed}', [
        '-m', 'fer_flax.main', f'--config=configs/{name}.py', f'--workdir={workdir}',
        *self.overrides(name, seed=seed)])
    result['finished'] = result['returncode'] == 0
    result['workdir'] = str(workdir)
    if earlier:  # Resumed: the run's wall time is that of all its calls.
      result['wall_seconds'] = round(result['wall_seconds'] + earlier['wall_seconds'], 1)
      result['calls'] = earlier.get('calls', 1) + 1
    return result


def _json(runner: Runner, name: str) -> dict[str, Any] | None:
  path = runner.out / f'{name}.json'
  return json.loads(path.read_text()) if path.exists() else None


def step_tests(runner: Runner) -> dict[str, Any]:
  tests = (TOY_TEST,) if runner.toy else DEVICE_TESTS
  result = runner.run('tests', ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', *tests])
  lines = result['tail'].strip().splitlines()
  result['outcome'] = lines[-1] if lines else 'no output'
  return result


def step_benchmark(runner: Runner) -> dict[str, Any]:
  results = {}
  for name in BENCHMARKED:
    out = runner.out / f'benchmark_{name}.json'
    steps = ['--steps=2'] if runner.toy else []
    config = 'tiny' if runner.toy and name == 'base' else name
    result = runner.run(f'benchmark_{name}', [
        '-m', 'fer_flax.benchmark', f'--config=configs/{config}.py', '--keras=', f'--json={out}',
        *steps, *runner.overrides(name)])
    if out.exists():
      result['report'] = json.loads(out.read_text())
    results[name] = result
  return results


def _time_to_target(workdir: pathlib.Path) -> dict[str, Any] | None:
  metrics = workdir / writers.METRICS_FILE
  if not metrics.exists():
    return None
  return timing.time_to_accuracy(writers.read_metrics(metrics), TARGET)


def step_fast(runner: Runner) -> dict[str, Any]:
  results = {}
  for seed in range(3):
    result = runner.train('fast', seed)
    result['time_to_target'] = _time_to_target(runner.workdir('fast', seed))
    results[f'seed{seed}'] = result
  return results


def step_best(runner: Runner) -> dict[str, Any]:
  results = {}
  for seed in range(runner.best_seeds):
    if runner.remaining() < 30:
      break
    results[f'seed{seed}'] = runner.train('best', seed)
    if not results[f'seed{seed}']['finished']:
      break  # Cut off by the budget: this step, run again, resumes it.
  return results


def _finished(runner: Runner, name: str) -> list[pathlib.Path]:
  step = _json(runner, name) or {}
  return [pathlib.Path(r['workdir']) for r in step.values() if r.get('finished')]


def _evaluate(runner: Runner, label: str, workdirs: list[pathlib.Path], tta: str) -> dict:
  out = runner.out / 'eval' / f'{label}-{tta}.json'
  out.parent.mkdir(exist_ok=True)
  result = runner.run(f'evaluate_{label}_{tta}', [
      '-m', 'fer_flax.evaluate', f'--workdir={",".join(map(str, workdirs))}',
      '--split=public_test', f'--tta={tta}', f'--data={runner.data}', f'--json={out}'])
  if out.exists():
    report = json.loads(out.read_text())
    result['accuracy'] = report['accuracy']
    result['members'] = report.get('members')
  return result


def step_evaluate(runner: Runner) -> dict[str, Any]:
  results = {}
  for name in ('fast', 'best'):
    runs = _finished(runner, name)
    for workdir in runs:
      for tta in ('none', 'flip', 'tencrop'):
        results[f'{workdir.name}-{tta}'] = _evaluate(runner, workdir.name, [workdir], tta)
    if len(runs) > 1:
      for tta in ('none', 'tencrop'):
        results[f'{name}-ensemble-{tta}'] = _evaluate(runner, f'{name}-ensemble', runs, tta)
  return results


def step_export(runner: Runner) -> dict[str, Any]:
  evaluated = _json(runner, 'evaluate') or {}
  scored = [(r['accuracy'], key.rsplit('-', 1)[0]) for key, r in evaluated.items()
            if key.endswith('-none') and 'ensemble' not in key and 'accuracy' in r]
  if not scored:
    return {'skipped': 'no evaluated run; run the evaluate step first'}
  accuracy, run = max(scored)
  result = runner.run('export', ['-m', 'fer_flax.export', f'--workdir={runner.out / "runs" / run}',
                                 f'--out={runner.out / "pretrained"}'])
  result.update(run=run, public_test=accuracy)
  return result


def _device() -> dict[str, Any]:
  """The devices, asked in a child process: JAX would hold the accelerator's memory here."""
  probe = ('import jax, json; d = jax.devices()[0]; print(json.dumps({"kind": d.device_kind, '
           '"platform": d.platform, "count": jax.device_count(), "jax": jax.__version__}))')
  result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                          check=True)
  return {**json.loads(result.stdout.strip().splitlines()[-1]),
          'python': platform.python_version(), 'cpus': os.cpu_count()}


def _rows(runner: Runner) -> list[tuple[str, str, str, str]]:
  """(what, figure, command, wall) for every figure the steps measured."""
  rows = []
  for name, r in (_json(runner, 'benchmark') or {}).items():
    report = r.get('report')
    if report:
      train = report['train']
      peak = train.get('bf16_peak_fraction')
      figure = (f"train {train['images_per_sec']:.0f} img/s, eval "
                f"{report['eval']['images_per_sec']:.0f} img/s, "
                f"{train['flops_per_image'] / 1e6:.0f} MFLOPs/img"
                + (f', {peak:.1%} of bf16 peak' if peak else ''))
      rows.append((f'benchmark {name}', figure, r['command'], f"{r['wall_seconds']} s"))
  for name in ('fast', 'best'):
    for seed, r in (_json(runner, name) or {}).items():
      reached = r.get('time_to_target')
      if reached:
        rec = reached['record']
        figure = (f"{TARGET:.0%} reached at {rec['train_seconds']:.1f} s training "
                  f"({rec['compile_seconds']:.1f} s compiling)" if reached['reached'] else
                  f"{TARGET:.0%} not reached; best {rec['accuracy']:.2%} at "
                  f"{rec.get('train_seconds', 0):.1f} s")
      else:
        figure = 'finished' if r['finished'] else f"stopped (status {r['returncode']}); resumable"
      rows.append((f'{name} {seed}', figure, r['command'], f"{r['wall_seconds']} s"))
  for key, r in (_json(runner, 'evaluate') or {}).items():
    if 'accuracy' in r:
      rows.append((f'public_test {key}', f"{r['accuracy']:.2%}", r['command'],
                   f"{r['wall_seconds']} s"))
  export = _json(runner, 'export') or {}
  if 'command' in export:
    rows.append(('export', f"{export['run']} ({export['public_test']:.2%}), status "
                 f"{export['returncode']}", export['command'], f"{export['wall_seconds']} s"))
  tests = _json(runner, 'tests')
  if tests:
    rows.append(('tests', tests['outcome'], tests['command'], f"{tests['wall_seconds']} s"))
  return rows


def step_summary(runner: Runner) -> dict[str, Any]:
  device = _device()
  rows = _rows(runner)
  summary = {'device': device, 'scale': 'toy' if runner.toy else 'full', 'rows': rows}
  lines = [f"Device: {device['count']} x {device['kind']} ({device['platform']}), JAX "
           f"{device['jax']}, Python {device['python']}, {device['cpus']} CPUs; scale "
           f"{summary['scale']}.", '', '| what | figure | command | wall |', '|---|---|---|---|']
  lines += [f'| {w} | {f} | `{c}` | {t} |' for w, f, c, t in rows]
  (runner.out / 'summary.md').write_text('\n'.join(lines) + '\n')
  (runner.out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
  return summary


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('steps', nargs='+', choices=(*STEPS, 'all'))
  parser.add_argument('--out', required=True, help='Folder for runs, logs and the summary.')
  parser.add_argument('--data', required=True, help='fer2013.zip, its folder, or fer2013.csv.')
  parser.add_argument('--budget_seconds', type=float, default=540,
                      help='Wall time each step may take (a device call allows 600 s).')
  parser.add_argument('--best_seeds', type=int, default=3)
  parser.add_argument('--scale', choices=('full', 'toy'), default='full')
  args = parser.parse_args()
  runner = Runner(args)
  for name in STEPS if 'all' in args.steps else args.steps:
    runner.deadline = time.monotonic() + runner.budget
    print(f'== {name}', flush=True)
    result = globals()[f'step_{name}'](runner)
    if name != 'summary':
      (runner.out / f'{name}.json').write_text(json.dumps(result, indent=2) + '\n')
  print((runner.out / 'summary.md').read_text() if (runner.out / 'summary.md').exists() else '')


if __name__ == '__main__':
  main()
