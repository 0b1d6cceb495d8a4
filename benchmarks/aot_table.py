"""The table of configs compiled for Cloud TPU slices: `fer_flax.aot` for each pair.

  python benchmarks/aot_table.py [--out=DIR] [--configs=fast,best,cpu] \
      [--slices=v5litepod-8,v6e-8,v4-32,v6e-256] [--table_only]

Runs `python -m fer_flax.aot --config=configs/NAME.py --accelerator_type=TYPE --json=...` for each
config and slice, one after another (cpu.py in bfloat16, as an accelerator would run it), keeps
each JSON report and its wall time in DIR, and prints a Markdown table; a pair that cannot run
shows the command's one-line error.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
_OVERRIDES = {'cpu': ['--config.model.dtype=bfloat16']}


def _gib(num_bytes: float) -> str:
  return f'{num_bytes / 2**30:.2f}'


def _row(name: str, accelerator_type: str, report: dict | None, error: str) -> str:
  if report is None:  # the one-line error, without its fix
    reason = error.removeprefix('fer_flax: error: ').split(';')[0]
    return f'| {name} | {accelerator_type} | {reason} |||||'
  hbm, estimate = report['hbm_bytes_per_chip'], report['estimate']
  evaluate = max(hbm['evaluate_by_tta'].values())
  return (f'| {name} | {accelerator_type}: {report["chips"]} chips, {report["hosts"]} '
          f'host{"s" if report["hosts"] > 1 else ""} | {_gib(hbm["training"]["total"])} / '
          f'{_gib(evaluate)} / {_gib(hbm["available"])}{"" if report["fits"] else " (no)"} | '
          f'{report["train_step_per_chip"]["flops"] / 1e9:.1f} | '
          f'{estimate["step_seconds"] * 1e3:.2f} | {estimate["epoch_seconds"]:.2f} | '
          f'{report["compile_seconds"]:.0f} |')


def _run(name: str, accelerator_type: str, out: pathlib.Path) -> None:
  """`fer_flax.aot` for one pair; its JSON report and its output (with the wall time) go to out."""
  report_path = out / f'{name}_{accelerator_type}.json'
  command = [sys.executable, '-m', 'fer_flax.aot', f'--config=configs/{name}.py',
             f'--accelerator_type={accelerator_type}', f'--json={report_path}',
             *_OVERRIDES.get(name, [])]
  report_path.unlink(missing_ok=True)
  start = time.perf_counter()
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  (out / f'{name}_{accelerator_type}.log').write_text(
      f'$ python {" ".join(command[1:])}\n{result.stdout}{result.stderr}'
      f'wall {time.perf_counter() - start:.1f} s\n')


def _table(names: list[str], accelerator_types: list[str], out: pathlib.Path) -> str:
  rows = ['| config | slice | HBM GiB: train / eval / chip | GFLOP/step/chip | step ms | epoch s '
          '| compile s |',
          '|---|---|---|---|---|---|---|']
  for name in names:
    for accelerator_type in accelerator_types:
      report_path = out / f'{name}_{accelerator_type}.json'
      log = (out / f'{name}_{accelerator_type}.log').read_text().splitlines()
      errors = [line for line in log if line.startswith('fer_flax: error:')]
      report = json.loads(report_path.read_text()) if report_path.exists() else None
      rows.append(_row(f'{name}.py', accelerator_type, report, errors[-1] if errors else ''))
  return '\n'.join(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='/tmp/fer_flax_aot_table')
  parser.add_argument('--configs', default='fast,best,cpu')
  parser.add_argument('--slices', default='v5litepod-8,v6e-8,v4-32,v6e-256')
  parser.add_argument('--table_only', action='store_true',
                      help='print the table of the reports already in --out; compile nothing')
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  names, accelerator_types = args.configs.split(','), args.slices.split(',')
  if not args.table_only:
    for name in names:
      for accelerator_type in accelerator_types:
        _run(name, accelerator_type, out)
  print(_table(names, accelerator_types, out))


if __name__ == '__main__':
  main()
