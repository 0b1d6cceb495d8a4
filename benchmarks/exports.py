"""Every export of a model: its size, accuracy, agreement with JAX and latency, beside JAX's own.

  python benchmarks/exports.py [--model=pretrained | --workdir=RUN] --data=PATH/TO/fer2013.zip
      [--split=public_test] [--out=DIR] [--json=FILE]

Exports the model in each format (`fer_flax.serve.exported`: SavedModel, ONNX, TFLite float32 /
float16 / int8 / dynamic), scores each file on `--split` through `fer_flax.serve.exported.load`
(TensorFlow, LiteRT, onnxruntime; no JAX) and counts the faces whose emotion (arg-max) equals the
JAX model's. Latency is ms per face at batch 1 and batch 64: the median over repeated calls (at
least 20 and 2 s) after 3 warm-up calls, on faces of the split, each model alone in a fresh
process (the runtimes' idle threads slow each other); the JAX model runs jitted, on float32
weights."""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fer_flax.data import fer2013
from fer_flax.serve import exported, loading

# (format, quantization), each taking any number of faces
VARIANTS = (('savedmodel', 'none'), ('onnx', 'none'), ('tflite', 'none'), ('tflite', 'float16'),
            ('tflite', 'int8'), ('tflite', 'dynamic'))


def latency_ms(run: Callable[[np.ndarray], np.ndarray], faces: np.ndarray) -> float:
  """Median ms per face of `run(faces)`."""
  for _ in range(3):
    run(faces)
  times = []
  start = time.perf_counter()
  while len(times) < 20 or time.perf_counter() - start < 2.0:
    tic = time.perf_counter()
    run(faces)
    times.append(time.perf_counter() - tic)
  return float(np.median(times)) / len(faces) * 1e3


def size_mb(path: pathlib.Path) -> float:
  files = path.rglob('*') if path.is_dir() else [path]
  return sum(f.stat().st_size for f in files if f.is_file()) / 1e6


def measure(model: str, args: argparse.Namespace) -> dict:
  """Accuracy, agreement with `args.reference` and latency of `model` ("jax" or an export)."""
  images, labels = fer2013.load_split(fer2013.Source(args.data), args.split)
  if model == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    config, variables, _ = _load(args)
    jitted = jax.jit(exported.probabilities_fn(config, variables))
    run = lambda x: np.asarray(jitted(x))
  else:
    run = exported.load(model)
  probabilities = np.concatenate([run(images[i:i + 256]) for i in range(0, len(images), 256)])
  predicted = probabilities.argmax(-1)
  reference = np.load(args.reference) if args.reference else predicted
  return {'accuracy': float((predicted == labels).mean()),
          'agreement': float((predicted == reference).mean()),
          'ms_per_face_batch_1': latency_ms(run, images[:1]),
          'ms_per_face_batch_64': latency_ms(run, images[:64]),
          'predicted': predicted.tolist() if model == 'jax' else None}


def measured(model: str, reference: pathlib.Path | None = None) -> dict:
  """`measure` in a fresh process: the runtimes' idle threads would slow each other."""
  extra = [f'--reference={reference}'] if reference else []
  child = subprocess.run([sys.executable, __file__, *sys.argv[1:], f'--measure={model}', *extra],
                         capture_output=True, text=True, check=True)
  return json.loads(child.stdout.strip().splitlines()[-1])


def _load(args: argparse.Namespace):
  loaded = loading.load_model(None if args.workdir else args.model, args.workdir)
  return loaded.config, loaded.variables, loaded.source


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='pretrained')
  parser.add_argument('--workdir')
  parser.add_argument('--data', required=True)
  parser.add_argument('--split', default='public_test')
  parser.add_argument('--out', help='Where the exports go; default: a temporary folder.')
  parser.add_argument('--json', help='Also write the rows here.')
  parser.add_argument('--measure', help=argparse.SUPPRESS)  # a child process: one model
  parser.add_argument('--reference', help=argparse.SUPPRESS)  # the JAX model's emotions (.npy)
  args = parser.parse_args()
  if args.measure:
    print(json.dumps(measure(args.measure, args)))
    return
  config, variables, _ = _load(args)
  rows = [{'model': 'JAX', **measured('jax')}]
  with tempfile.TemporaryDirectory() as scratch:
    out = pathlib.Path(args.out or scratch)
    reference = out / 'jax_emotions.npy'
    np.save(reference, np.asarray(rows[0].pop('predicted')))
    for fmt, quantize in VARIANTS:
      name = f'{fmt} {quantize}'
      tic = time.perf_counter()
      path = exported.export_model(config, variables, fmt, out / name.replace(' ', '_'), quantize,
                                 data=args.data)
      seconds = time.perf_counter() - tic
      row = {'model': name, **measured(str(path), reference), 'megabytes': size_mb(path),
             'export_seconds': seconds}
      del row['predicted']
      rows.append(row)
      print(json.dumps(row), flush=True)
  print(f'\n| model | size | {args.split} | same emotion as JAX | ms/face, batch 1 | '
        'ms/face, batch 64 |\n|---|---|---|---|---|---|')
  for row in rows:
    size = f'{row["megabytes"]:.1f} MB' if 'megabytes' in row else ''
    agreement = f'{row["agreement"]:.2%}' if 'megabytes' in row else ''
    print(f'| {row["model"]} | {size} | {row["accuracy"]:.2%} | {agreement} | '
          f'{row["ms_per_face_batch_1"]:.2f} | {row["ms_per_face_batch_64"]:.3f} |')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
  main()
