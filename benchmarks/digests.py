"""Digests of a finished run's state, to prove a refactor left training bit-identical on CPU.

Trains each case with `python -m fer_flax.main` in a fresh workdir, then reads the last
checkpoint straight from Orbax (no fer_flax code, so any version of the package can be compared)
and prints a SHA-256 of its parameters, optimizer state, weight average and batch statistics.

  python benchmarks/digests.py --data=../shared/data/fer2013/fer2013.zip --out=digests.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

# (name, config, overrides): the tiny config on both inputs, and cpu.py for one epoch.
CASES = (
    ('tiny_tfds', 'configs/tiny.py', ['--config.num_epochs=1', '--config.data.pipeline=tfds']),
    ('tiny_memory', 'configs/tiny.py',
     ['--config.num_epochs=1', '--config.data.pipeline=memory', '--config.steps_per_call=10']),
    ('cpu_1_epoch', 'configs/cpu.py',
     ['--config.num_epochs=1', '--config.time_budget_minutes=0']),
)


def _digest(tree) -> str:
  """SHA-256 over the leaves' paths, dtypes, shapes and bytes, in path order."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(tree),
                           key=lambda item: jax.tree_util.keystr(item[0])):
    array = np.asarray(leaf)
    h.update(f'{jax.tree_util.keystr(path)} {array.dtype} {array.shape}'.encode())
    h.update(array.tobytes())
  return h.hexdigest()[:16]


def digests(workdir: str) -> dict[str, str]:
  """Digests of each part of the latest checkpoint in `workdir`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.join(workdir, 'checkpoints')
  step = max(int(name) for name in os.listdir(directory) if name.isdigit())
  state = ocp.PyTreeCheckpointer().restore(os.path.join(directory, str(step), 'default'))
  parts = ('params', 'opt_state', 'ema', 'batch_stats')
  return {'step': step, **{part: _digest(state.get(part) or {}) for part in parts}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', required=True, help='fer2013.zip')
  parser.add_argument('--out', help='JSON file for the digests')
  parser.add_argument('--cases', default=','.join(c[0] for c in CASES))
  args = parser.parse_args()
  results = {}
  for name, config, overrides in CASES:
    if name not in args.cases.split(','):
      continue
    with tempfile.TemporaryDirectory() as workdir:
      tic = time.perf_counter()
      subprocess.run([sys.executable, '-m', 'fer_flax.main', f'--config={config}',
                      f'--workdir={workdir}', f'--config.data.path={args.data}', *overrides],
                     check=True, stderr=subprocess.DEVNULL)
      results[name] = {**digests(workdir), 'seconds': round(time.perf_counter() - tic, 1)}
    print(name, json.dumps(results[name]), flush=True)
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
