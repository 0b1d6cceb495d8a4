"""Measures a config's speed: training, evaluation and input images/s, compile time, memory.

  python -m fer_flax.benchmark --config=configs/base.py [--steps=50] [--json=FILE]
      [--keras=tensorflow,jax] [--config.data.path=PATH/TO/fer2013.zip]

Training and evaluation run the compiled steps that `fer_flax.main` runs, on synthetic batches of
the configured size already on the devices, so they time the step and nothing else (compilation is
timed apart). The input pipeline is timed on its own, on the real data, when the config names it.
For `seed_cnn`, the peer script `benchmarks/keras_seed_cnn.py` then trains the same network on the
same batches with Keras 3 (one process per back end, one after the other, so nothing competes for
the cores), and the ratio fer_flax / Keras is reported from this one run.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from fer_flax import models
from fer_flax.core import chips, cli
from fer_flax.core.errors import UserError, exits_on_user_error
from fer_flax.core.mesh import Parallel, cost_analysis
from fer_flax.data import feeds, fer2013
from fer_flax.train import build
from fer_flax.train.plan import RunPlan

FLAGS = flags.FLAGS
PEER_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'keras_seed_cnn.py'


def synthetic_batches(num_batches: int, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """[num_batches, batch, 48, 48, 1] uint8 images and [num_batches, batch] labels."""
  rng = np.random.default_rng(seed)
  size = fer2013.IMAGE_SIZE
  return {'image': rng.integers(0, 256, (num_batches, batch_size, size, size, 1), np.uint8),
          'label': rng.integers(0, fer2013.NUM_CLASSES, (num_batches, batch_size), np.int32)}


def _rate(run, count: int, repeats: int = 3) -> float:
  """Items per second of `run()` (which processes `count` items), the best of `repeats`."""
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run())
    best = min(best, time.perf_counter() - start)
  return count / best


def _compile(jitted, *args) -> tuple[Any, float]:
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def _flops(jitted, *args) -> float:
  """FLOPs of one call, as XLA's cost analysis of the lowered program counts them."""
  return float(cost_analysis(jitted.lower(*args)).get('flops', 0.0))


def _train(config: ml_collections.ConfigDict, parallel: Parallel, steps: int,
           batches: dict[str, np.ndarray]) -> dict[str, Any]:
  """The compiled train step of `fer_flax.main`, `steps_per_call` steps per call as configured."""
  setup = build.build(config, RunPlan.create(config, steps), parallel)
  state, rng, jitted = setup.state, setup.rng, setup.train_step
  per_call = min(config.steps_per_call, steps) if config.data.pipeline == 'memory' else 1
  calls = max(steps // per_call, 1)
  stacked = [parallel.to_global({k: v[i * per_call:(i + 1) * per_call] for k, v in batches.items()},
                                parallel.stacked) for i in range(calls)]
  # One step's FLOPs, from a one-step call: a scan's body would be counted once, not per step.
  flops = _flops(jitted, state, jax.tree.map(lambda x: x[:1], stacked[0]), rng)
  step, compile_seconds = _compile(jitted, state, stacked[0], rng)

  def run():
    nonlocal state
    for batch in stacked:
      state, metrics = step(state, batch, rng)
    return metrics

  run()  # Warm-up: first executions allocate and page in.
  rate = _rate(run, calls * per_call * config.batch_size)
  return {'parameters': models.count_parameters(state.params),
          'compile_seconds': compile_seconds, 'steps_per_call': per_call,
          'images_per_sec': rate, 'step_ms': 1000 * config.batch_size / rate,
          'flops_per_image': flops / config.batch_size,
          '_evaluate': (setup.eval_step, state.variables())}


def _evaluate(config: ml_collections.ConfigDict, parallel: Parallel, jitted: Any,
              variables: Any) -> dict[str, Any]:
  """The compiled evaluation step of `fer_flax.main` on the trained variables."""
  batch = synthetic_batches(1, config.eval_batch_size, seed=1)
  batch = parallel.to_global({'image': batch['image'][0], 'label': batch['label'][0],
                              'mask': np.ones(config.eval_batch_size, bool)})
  flops = _flops(jitted, variables, batch)
  step, compile_seconds = _compile(jitted, variables, batch)
  repeats = 5
  step(variables, batch)
  rate = _rate(lambda: [step(variables, batch) for _ in range(repeats)],
               repeats * config.eval_batch_size)
  return {'images_per_sec': rate, 'compile_seconds': compile_seconds,
          'flops_per_image': flops / config.eval_batch_size}


def _input(config: ml_collections.ConfigDict, parallel: Parallel, steps: int) -> dict[str, Any]:
  """The configured input alone, on the real data: the in-memory one where TensorFlow is missing."""
  if not config.data.path:
    return {'skipped': 'no data: pass --config.data.path=PATH/TO/fer2013.zip'}
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.pipeline = feeds.eval_pipeline(config)
  start = time.perf_counter()
  feed = feeds.train_feed(config, parallel)
  load_seconds = time.perf_counter() - start
  batches = feed.batches(0, feed.steps_per_epoch * (steps * 3 + 1))  # taken as far as needed
  jax.block_until_ready(next(batches))
  start, images = time.perf_counter(), 0
  for _, batch in zip(range(steps * 3), batches, strict=False):
    images += batch['label'].size
  jax.block_until_ready(batch)
  rate = images / (time.perf_counter() - start)
  what = {'memory': 'batches gathered on the devices from the split held there',
          'tfds': 'tf.data batches placed on the devices'}[config.data.pipeline]
  return {'images_per_sec': rate, 'load_seconds': load_seconds, 'what': what}


def _memory() -> dict[str, Any]:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return {'peak_device_bytes': int(stats['peak_bytes_in_use'])}
  return {'peak_host_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def keras_peer(backend: str, batches: dict[str, np.ndarray], warmup: int) -> dict[str, Any]:
  """Runs the Keras peer script on `batches` in a fresh process with KERAS_BACKEND=`backend`."""
  if not PEER_SCRIPT.exists():
    raise UserError(f'{PEER_SCRIPT} is missing; run the benchmark from a checkout of fer_flax')
  with tempfile.TemporaryDirectory() as tmp:
    data = pathlib.Path(tmp) / 'batches.npz'
    np.savez(data, images=batches['image'], labels=batches['label'])
    result = subprocess.run(
        [sys.executable, str(PEER_SCRIPT), f'--data={data}', f'--warmup={warmup}'],
        env={**os.environ, 'KERAS_BACKEND': backend}, capture_output=True, text=True,
        check=False)
  if result.returncode:
    last = (result.stderr.strip().splitlines() or ['no output'])[-1]
    raise UserError(f'the Keras peer ({backend}) failed: {last}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def benchmark(config: ml_collections.ConfigDict, steps: int,
              keras_backends: list[str]) -> dict[str, Any]:
  """Every figure the command prints, as a dict."""
  parallel = Parallel(cpu_compiler_options=config.cpu_compiler_options.to_dict())
  parallel.check_batch_size(config.batch_size, 'batch_size')
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  warmup = 5
  batches = synthetic_batches(warmup + steps, config.batch_size)
  device = jax.devices()[0]
  report: dict[str, Any] = {
      'model': config.model.name, 'batch_size': config.batch_size,
      'dtype': config.model.dtype, 'pipeline': config.data.pipeline,
      'device': {'kind': device.device_kind, 'platform': device.platform,
                 'count': jax.device_count(), 'processes': jax.process_count()},
      'compiler_options': parallel.compiler_options,
  }
  ours = {k: v[warmup:] for k, v in batches.items()}
  report['train'] = _train(config, parallel, steps, ours)
  report['eval'] = _evaluate(config, parallel, *report['train'].pop('_evaluate'))
  peak = getattr(chips.chip(device.device_kind), 'bf16_flops', None)
  for part in (report['train'], report['eval']):
    part['flops_per_sec'] = part['flops_per_image'] * part['images_per_sec']
    if peak:  # The whole mesh's share of its chips' peak.
      part['bf16_peak_fraction'] = part['flops_per_sec'] / (peak * jax.device_count())
  report['input'] = _input(config, parallel, steps)
  report['memory'] = _memory()
  if keras_backends:
    if config.model.name != 'seed_cnn' or config.model.get('features', (64, 128)) != (64, 128):
      raise UserError('the Keras peer trains the original seed_cnn only; use configs/base.py, '
                      'or pass --keras= to skip it')
    report['keras'] = {}
    for backend in keras_backends:
      peer = keras_peer(backend, batches, warmup)
      peer['ratio'] = report['train']['images_per_sec'] / peer['images_per_sec']
      report['keras'][backend] = peer
  return report


def _flops_text(part: dict[str, Any]) -> str:
  text = (f"; {part['flops_per_image'] / 1e6:.1f} MFLOPs/image, "
          f"{part['flops_per_sec'] / 1e12:.3f} TFLOP/s")
  if 'bf16_peak_fraction' in part:
    text += f", {part['bf16_peak_fraction']:.1%} of bf16 peak"
  return text


def format_report(report: dict[str, Any]) -> str:
  """The human-readable table the command prints."""
  device, tr, ev, inp = report['device'], report['train'], report['eval'], report['input']
  lines = [
      f"{report['model']} ({tr['parameters']:,} parameters), batch {report['batch_size']}, "
      f"{report['dtype']}, {report['pipeline']} input",
      f"device: {device['count']} x {device['kind']} ({device['platform']}), "
      f"{device['processes']} process(es)",
      f"train: {tr['images_per_sec']:8.1f} images/s  ({tr['step_ms']:.1f} ms/step; compile "
      f"{tr['compile_seconds']:.1f} s){_flops_text(tr)}",
      f"eval:  {ev['images_per_sec']:8.1f} images/s  (compile {ev['compile_seconds']:.1f} s)"
      f"{_flops_text(ev)}",
  ]
  if 'skipped' in inp:
    lines.append(f"input: skipped ({inp['skipped']})")
  else:
    lines.append(f"input: {inp['images_per_sec']:8.1f} images/s  ({inp['what']}; "
                 f"set up in {inp['load_seconds']:.1f} s)")
  for name, value in report['memory'].items():
    lines.append(f"memory: {name.replace('_', ' ')} {value / 2**20:.0f} MiB")
  for backend, peer in report.get('keras', {}).items():
    lines.append(f"keras {peer['keras']} ({backend}): {peer['images_per_sec']:8.1f} images/s; "
                 f"fer_flax / keras = {peer['ratio']:.2f}")
  return '\n'.join(lines)


def _define_flags() -> None:
  flags.DEFINE_integer('steps', 50, 'Timed training steps (after warm-up).')
  flags.DEFINE_string('json', None, 'Also write the figures to this JSON file.')
  flags.DEFINE_list('keras', None, 'Keras back ends to compare with (seed_cnn only); default '
                    'tensorflow,jax for seed_cnn, none otherwise; --keras= for none.')
  config_flags.DEFINE_config_file('config', None, 'Training config file (configs/*.py).',
                                  lock_config=True)
  flags.mark_flags_as_required(['config'])


@exits_on_user_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = FLAGS.config
  keras_backends = FLAGS.keras
  if keras_backends is None:
    keras_backends = ['tensorflow', 'jax'] if config.model.name == 'seed_cnn' else []
  report = benchmark(config, FLAGS.steps, keras_backends)
  print(format_report(report))
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(report, indent=2) + '\n')


def run() -> None:
  """`fer-flax-benchmark`, `python -m fer_flax.benchmark`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
