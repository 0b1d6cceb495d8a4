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

from fer_flax import fer2013, in_memory, models, train
from fer_flax.errors import UserError

FLAGS = flags.FLAGS
PEER_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'keras_seed_cnn.py'


def synthetic_batches(num_batches: int, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """[num_batches, batch, 48, 48, 1] uint8 images and [num_batches, batch] labels."""
  rng = np.random.default_rng(seed)
  size = fer2013.IMAGE_SIZE
  return {'image': rng.integers(0, 256, (num_batches, batch_size, size, size, 1), np.uint8),
          'label': rng.integers(0, len(fer2013.EMOTIONS), (num_batches, batch_size), np.int32)}


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


def _train(config: ml_collections.ConfigDict, parallel: train.Parallel, steps: int,
           batches: dict[str, np.ndarray]) -> dict[str, Any]:
  model = models.create_model(config.model, num_classes=len(fer2013.EMOTIONS))
  tx = train.create_optimizer(config, train.create_learning_rate_schedule(config, 100, 10_000))
  state = train.create_train_state(model, tx, jax.random.key(0), parallel.replicated,
                                   ema=bool(config.ema_decay))
  rng = parallel.replicate(lambda: jax.random.key(1))
  result = {'parameters': sum(x.size for x in jax.tree.leaves(state.params))}
  if config.data.pipeline == 'memory':
    data = in_memory.TrainData(batches['image'].reshape(-1, *batches['image'].shape[2:]),
                               batches['label'].reshape(-1), config.batch_size, 0, parallel.mesh)
    per_call = min(config.steps_per_call, data.steps_per_epoch)
    order = data.permutation(0)
    step, result['compile_seconds'] = _compile(
        parallel.jit_train_steps(config, data, per_call), state, data.arrays, order, 0, rng)
    calls = max(steps // per_call, 1)
    result['steps_per_call'] = per_call

    def run():
      nonlocal state
      for i in range(calls):
        state, metrics = step(state, data.arrays, order, (i * per_call) % data.steps_per_epoch,
                              rng)
      return metrics
    timed_steps = calls * per_call
  else:
    device_batches = [parallel.to_global({k: v[i] for k, v in batches.items()})
                      for i in range(steps)]
    step, result['compile_seconds'] = _compile(parallel.jit_train_step(config), state,
                                               device_batches[0], rng)

    def run():
      nonlocal state
      for batch in device_batches:
        state, metrics = step(state, batch, rng)
      return metrics
    timed_steps = steps
  run()  # Warm-up: first executions allocate and page in.
  result['images_per_sec'] = _rate(run, timed_steps * config.batch_size)
  result['step_ms'] = 1000 * config.batch_size / result['images_per_sec']
  result['_state'] = state
  return result


def _evaluate(config: ml_collections.ConfigDict, parallel: train.Parallel,
              state: train.TrainState) -> dict[str, Any]:
  model = models.create_model(config.model, num_classes=len(fer2013.EMOTIONS))
  batch = synthetic_batches(1, config.eval_batch_size, seed=1)
  batch = parallel.to_global({'image': batch['image'][0], 'label': batch['label'][0],
                              'mask': np.ones(config.eval_batch_size, bool)})
  variables = state.variables()
  step, compile_seconds = _compile(parallel.jit_eval_step(model.apply), variables, batch)
  repeats = 5
  step(variables, batch)
  rate = _rate(lambda: [step(variables, batch) for _ in range(repeats)],
               repeats * config.eval_batch_size)
  return {'images_per_sec': rate, 'compile_seconds': compile_seconds}


def _input(config: ml_collections.ConfigDict, parallel: train.Parallel,
           steps: int) -> dict[str, Any]:
  """The configured input path alone, on the real data."""
  if not config.data.path:
    return {'skipped': 'no data: pass --config.data.path=PATH/TO/fer2013.zip'}
  start = time.perf_counter()
  feed = train.create_feed(config, parallel)
  load_seconds = time.perf_counter() - start
  data = feed.train
  if isinstance(feed, train.MemoryFeed):
    order, gather = data.permutation(0), jax.jit(data.batch)
    gather(data.arrays, order, 0)
    count = min(steps, data.steps_per_epoch)
    rate = _rate(lambda: [gather(data.arrays, order, i) for i in range(count)],
                 count * config.batch_size)
    return {'images_per_sec': rate, 'load_seconds': load_seconds,
            'what': 'batches gathered on the devices from the split held there'}
  batches = data.iterate()
  next(batches)
  count = min(steps * 3, data.steps_per_epoch - 1)
  rate = _rate(lambda: [next(batches) for _ in range(count)], count * config.batch_size,
               repeats=1)
  return {'images_per_sec': rate, 'load_seconds': load_seconds,
          'what': 'tf.data batches on the host'}


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
  parallel = train.Parallel(cpu_compiler_options=config.cpu_compiler_options.to_dict())
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
  state = report['train'].pop('_state')
  report['eval'] = _evaluate(config, parallel, state)
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


def format_report(report: dict[str, Any]) -> str:
  """The human-readable table the command prints."""
  device, tr, ev, inp = report['device'], report['train'], report['eval'], report['input']
  lines = [
      f"{report['model']} ({tr['parameters']:,} parameters), batch {report['batch_size']}, "
      f"{report['dtype']}, {report['pipeline']} input",
      f"device: {device['count']} x {device['kind']} ({device['platform']}), "
      f"{device['processes']} process(es)",
      f"train: {tr['images_per_sec']:8.1f} images/s  ({tr['step_ms']:.1f} ms/step; compile "
      f"{tr['compile_seconds']:.1f} s)",
      f"eval:  {ev['images_per_sec']:8.1f} images/s  (compile {ev['compile_seconds']:.1f} s)",
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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = FLAGS.config
  keras_backends = FLAGS.keras
  if keras_backends is None:
    keras_backends = ['tensorflow', 'jax'] if config.model.name == 'seed_cnn' else []
  try:
    report = benchmark(config, FLAGS.steps, keras_backends)
  except UserError as e:
    sys.exit(f'fer_flax.benchmark: error: {e}')
  print(format_report(report))
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
  # Defined here, not at import, so that tests can import this module.
  _define_flags()
  app.run(main)
