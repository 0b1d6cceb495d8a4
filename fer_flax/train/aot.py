"""Compiles a config for a Cloud TPU slice on a host without TPUs, and says whether it fits.

`python -m fer_flax.aot` is its command.

XLA's TPU compiler (libtpu, the `tpu` extra) runs on any x86 host, and JAX describes a slice
without owning it. This compiles, for the slice's chips and hosts, the programs `fer_flax.main`
runs there with the shardings it uses (the global batch across every chip and host): the train
call for each image size and number of steps a call takes, the evaluation step for each test-time
augmentation, and the on-device input's shuffle and gather. It reports what each chip's HBM must
hold against what it has, the FLOPs of a train step per chip, and a roofline estimate of the step
and epoch times; a config that cannot run there ends in one line. The figures are compiled-for,
not run-on: nothing executes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from fer_flax import models
from fer_flax.core import chips, platforms
from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Parallel, cost_analysis, full_batches
from fer_flax.data import augment, feeds, fer2013, on_device
from fer_flax.train import build, optim, step_fns
from fer_flax.train.plan import RunPlan

_EVAL = 'evaluation, tta='


def _steps(length: int) -> str:
  return f'{length} step{"s" if length > 1 else ""}'


def _train_name(length: int, size: int = fer2013.IMAGE_SIZE) -> str:
  return f'train call, {_steps(length)} at {size}x{size}'


@dataclasses.dataclass
class Program:
  """One compiled program: its compile time and XLA's per-chip memory and cost analyses."""
  name: str
  compile_seconds: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int  # outputs written into donated arguments (the train state)
  temp_bytes: int
  generated_code_bytes: int
  flops: float
  bytes_accessed: float

  @property
  def working_bytes(self) -> int:
    """What running it adds to the buffers that outlive it: temporaries and new outputs."""
    return self.temp_bytes + self.output_bytes - self.alias_bytes


@contextlib.contextmanager
def _runtime_settings(slice_: chips.TpuSlice) -> Iterator[None]:
  """On a host without TPUs, tells libtpu the slice it would otherwise look up (and complain that
  it cannot) while it starts, and lets other processes compile at the same time (with no chip to
  guard, libtpu's lock on /tmp/libtpu_lockfile only stops them); the environment is restored
  after."""
  settings = {'TPU_ACCELERATOR_TYPE': slice_.accelerator_type, 'TPU_WORKER_HOSTNAMES': 'localhost',
              'ALLOW_MULTIPLE_LIBTPU_LOAD': '1'}
  added = {} if platforms.has_tpu() else {k: v for k, v in settings.items() if k not in os.environ}
  os.environ.update(added)
  try:
    yield
  finally:
    for key in added:
      del os.environ[key]


def slice_devices(slice_: chips.TpuSlice) -> list[jax.Device]:
  """The slice's devices as the compiler sees them (in process order, as `jax.devices()` is)."""
  if not platforms.libtpu_installed():
    raise UserError("compiling for TPUs needs libtpu, which is not installed here; install the "
                    "extra that brings it: pip install -e '.[tpu]'")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  options = {'chip_config_name': 'megacore'} if slice_.megacore else {}
  with _runtime_settings(slice_):
    topology = topologies.get_topology_desc(
        topology_name=slice_.topology, platform='tpu',
        chips_per_host_bounds=slice_.chips_per_host_bounds, **options)
  return list(topology.devices)


def _abstract(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _batch(shape: tuple[int, ...], sharding: jax.sharding.Sharding,
           mask: bool = False, flip: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
  """A batch of uint8 faces and int32 labels (and a bool mask, or each face's side with
  alternating flips) of leading shape `shape`."""
  size = fer2013.IMAGE_SIZE
  batch = {'image': jax.ShapeDtypeStruct((*shape, size, size, 1), jnp.uint8, sharding=sharding),
           'label': jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding)}
  for field, wanted in (('mask', mask), ('flip', flip)):
    if wanted:
      batch[field] = jax.ShapeDtypeStruct(shape, jnp.bool_, sharding=sharding)
  return batch


def chip_bytes(tree: Any) -> int:
  """Bytes each chip holds of `tree`'s abstract arrays, as the TPU lays them out (in tiles, which
  pad small dimensions): the arguments of a program that takes them and does nothing."""
  program = jax.jit(lambda *args: None, keep_unused=True)
  return program.lower(*jax.tree.leaves(tree)).compile().memory_analysis().argument_size_in_bytes


def _does_not_fit(accelerator_type: str, per_chip: int, why: str) -> UserError:
  return UserError(f'the config does not fit on {accelerator_type}: {why}; lower '
                   f'--config.batch_size ({per_chip} a chip now) or --config.steps_per_call, or '
                   'use a larger slice')


class HbmExhausted(Exception):
  """XLA refused to compile a program: it needs more HBM than a chip has."""


def _compile(name: str, jitted: Callable, args: Sequence[Any],
             static: Sequence[Any] = ()) -> Program:
  start = time.perf_counter()
  try:
    compiled = jitted.lower(*args, *static).compile()
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' in str(e):
      reason = str(e).splitlines()[0].removeprefix('RESOURCE_EXHAUSTED: ').rstrip('.')
      raise HbmExhausted(f'{name}: {reason}') from e
    raise
  seconds = time.perf_counter() - start
  memory, cost = compiled.memory_analysis(), cost_analysis(compiled)
  return Program(name, seconds, memory.argument_size_in_bytes, memory.output_size_in_bytes,
                 memory.alias_size_in_bytes, memory.temp_size_in_bytes,
                 memory.generated_code_size_in_bytes, float(cost.get('flops', 0.0)),
                 float(cost.get('bytes accessed', 0.0)))


@dataclasses.dataclass
class RunShapes:
  """A run on a mesh as shapes: what each compiled program takes, and what stays on the chips."""
  steps_per_epoch: int
  call_lengths: list[int]
  image_sizes: list[int]
  eval_batches: int
  state: Any      # abstract TrainState, replicated
  rng: Any
  resident: dict[str, int]  # bytes each chip holds for the whole run, by what they are
  call_batch_bytes: int     # one call's batches, per chip


def run_shapes(config: ml_collections.ConfigDict, parallel: Parallel) -> RunShapes:
  """What `fer_flax.main` would set up on `parallel`'s mesh, as shapes; nothing is allocated."""
  feeds.check_settings(config)
  parallel.check_batch_size(config.batch_size, 'batch_size')
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  for field in ('train_split', 'eval_split'):
    if config.data[field] not in fer2013.SPLIT_SIZES:
      raise UserError(f'config.data.{field}={config.data[field]!r} is not a FER2013 split; '
                      f'choose one of {", ".join(fer2013.SPLIT_SIZES)}')
  processes = len({d.process_index for d in parallel.mesh.devices.flat})
  memory = config.data.pipeline == 'memory'
  train_examples = fer2013.SPLIT_SIZES[config.data.train_split]
  steps_per_epoch = full_batches(train_examples, config.batch_size,
                                 parallel.num_devices if memory else processes)
  if steps_per_epoch == 0:
    raise UserError(f'config.batch_size={config.batch_size} is more than the {train_examples} '
                    f'training examples hold on {parallel.num_devices} chips; lower it')
  model = models.create_model(config.model)
  plan = RunPlan.create(config, steps_per_epoch)
  schedule = optim.create_learning_rate_schedule(config, plan)
  init = step_fns.state_initializer(model, optim.create_optimizer(config, schedule),
                                    bool(config.ema_decay))
  key = jax.eval_shape(lambda: jax.random.key(config.seed))
  state = _abstract(jax.eval_shape(init, key), parallel.replicated)
  eval_examples = fer2013.SPLIT_SIZES[config.data.eval_split]
  eval_batches = math.ceil(eval_examples / config.eval_batch_size)
  eval_batch = chip_bytes(_batch((config.eval_batch_size,), parallel.data, mask=True))
  resident = {'train state': chip_bytes(state),
              # The in-memory input holds both splits and the epoch's order on the chips; tf.data
              # brings one evaluation batch at a time.
              'training split': chip_bytes(_split(config, parallel)) if memory else 0,
              'evaluation split': eval_batch * (eval_batches if memory else 1)}
  lengths = on_device.call_lengths(steps_per_epoch, config.steps_per_call if memory else 1)
  return RunShapes(steps_per_epoch, lengths, sorted(set(plan.image_sizes)),
                   eval_batches, state, _abstract(key, parallel.replicated), resident,
                   chip_bytes(_batch((lengths[0], config.batch_size), parallel.stacked)))


def compile_programs(config: ml_collections.ConfigDict, parallel: Parallel, run: RunShapes,
                     tta_modes: Sequence[str]) -> list[Program]:
  """Every program `fer_flax.main` compiles for the run, and `evaluate`'s for `tta_modes`."""
  programs = []
  train = step_fns.compile_train_steps(config, parallel)
  flip = augment.alternates_flips(config.augment)
  for size in run.image_sizes:
    for length in run.call_lengths:
      batches = _batch((length, config.batch_size), parallel.stacked, flip=flip)
      programs.append(_compile(_train_name(length, size), train,
                               (run.state, batches, run.rng), (size, True)))
  if config.augment.get('clean_last_epochs', 0):  # flips only, at full size
    for length in run.call_lengths:
      batches = _batch((length, config.batch_size), parallel.stacked, flip=flip)
      programs.append(_compile(_train_name(length) + ', clean', train,
                               (run.state, batches, run.rng), (fer2013.IMAGE_SIZE, False)))
  if config.model.get('whiten', 0):
    batches = _batch((run.call_lengths[0], config.batch_size), parallel.stacked)
    programs.append(_compile('whitening fit', build.whitening_fit(config, parallel),
                             (run.state, batches['image'])))
  batch = _batch((config.eval_batch_size,), parallel.data, mask=True)
  for tta in dict.fromkeys(('none', *tta_modes)):  # training's own evaluation, then the others
    evaluate = step_fns.compile_eval_step(run.state.apply_fn, parallel, tta)
    programs.append(_compile(_EVAL + tta, evaluate, (run.state.variables(), batch)))
  if config.data.pipeline == 'memory':
    programs += _input_programs(config, parallel, run)
  return programs


def _input_programs(config: ml_collections.ConfigDict, parallel: Parallel,
                    run: RunShapes) -> list[Program]:
  """The in-memory input's shuffle and, for each call length, its gather."""
  mesh, scalar = parallel.mesh, parallel.replicated
  split, order = _split(config, parallel)
  permutation = on_device.permutation_program(mesh, order.shape[0] // parallel.num_devices)
  programs = [_compile('input: shuffle', permutation,
                       (jax.ShapeDtypeStruct((), jnp.uint32, sharding=scalar),
                        jax.ShapeDtypeStruct((), jnp.int32, sharding=scalar)))]
  gather = on_device.gather_program(mesh, config.batch_size // parallel.num_devices)
  for length in run.call_lengths:
    programs.append(_compile(f'input: gather {_steps(length)}', gather,
                             (split, order, jax.ShapeDtypeStruct((), jnp.int32, sharding=scalar)),
                             (length,)))
  return programs


def _split(config: ml_collections.ConfigDict,
           parallel: Parallel) -> tuple[dict[str, jax.ShapeDtypeStruct], jax.ShapeDtypeStruct]:
  """The training split as the in-memory input holds it (an equal share on each chip), and the
  epoch's order of it."""
  per_device = fer2013.SPLIT_SIZES[config.data.train_split] // parallel.num_devices
  used = per_device * parallel.num_devices
  return (_batch((used,), parallel.data, flip=augment.alternates_flips(config.augment)),
          jax.ShapeDtypeStruct((used,), jnp.int32, sharding=parallel.data))


def training_hbm(run: RunShapes, programs: Sequence[Program]) -> dict[str, int]:
  """Bytes each chip needs at training's peak, by what they are.

  What lives all run (the state, the splits on the chips), two calls' batches (the next one is
  gathered while the current one trains), the code of every program training loads, and the
  largest working memory of any one of them (they run one after another).
  """
  needed = {**run.resident, 'batches': 2 * run.call_batch_bytes,
            'code': sum(p.generated_code_bytes for p in programs),
            'working': max(p.working_bytes for p in programs)}
  return {**needed, 'total': sum(needed.values())}


def evaluation_hbm(run: RunShapes, program: Program) -> int:
  """Bytes each chip needs for `evaluate` with one test-time augmentation: the split on the chips,
  the program's arguments (the weights, one batch), its working memory and code."""
  return (run.resident['evaluation split'] + program.argument_bytes + program.working_bytes
          + program.generated_code_bytes)


def roofline(flops: float, bytes_accessed: float, chip: chips.Chip) -> tuple[float, str]:
  """The least time a program can take, and what bounds it: its FLOPs at the bf16 peak or its
  bytes at full HBM bandwidth, whichever takes longer. XLA counts the bytes every operation reads
  and writes, some of which stay on the chip, so the memory side errs long; latency, collectives
  and the host are left out."""
  compute, memory = flops / chip.bf16_flops, bytes_accessed / chip.hbm_bytes_per_second
  return (compute, 'compute') if compute >= memory else (memory, 'HBM bandwidth')


def check(config: ml_collections.ConfigDict, accelerator_type: str,
          tta_modes: Sequence[str] = augment.TTA_MODES) -> dict[str, Any]:
  """Compiles `config`'s programs for `accelerator_type`; the report `fer_flax.aot` prints."""
  slice_ = chips.tpu_slice(accelerator_type)
  devices = slice_devices(slice_)
  chip = chips.chip(devices[0].device_kind)
  parallel = Parallel(devices)
  run = run_shapes(config, parallel)
  try:
    programs = compile_programs(config, parallel, run, tta_modes)
  except HbmExhausted as e:
    raise _does_not_fit(accelerator_type, config.batch_size // parallel.num_devices,
                        str(e)) from e
  # XLA's cost analysis counts a loop's body once, so a call of n steps costs what one step does
  # (tests/test_aot.py checks this); the steady state is the full-length call at full size.
  train = next(p for p in programs if p.name == _train_name(run.call_lengths[0]))
  evaluations = {p.name.removeprefix(_EVAL): p for p in programs if p.name.startswith(_EVAL)}
  step_seconds, bound = roofline(train.flops, train.bytes_accessed, chip)
  plain = evaluations['none']
  eval_seconds = run.eval_batches * roofline(plain.flops, plain.bytes_accessed, chip)[0]
  training = training_hbm(run, [p for p in programs
                                if not p.name.startswith(_EVAL) or p is plain])
  evaluation = {tta: evaluation_hbm(run, p) for tta, p in evaluations.items()}
  return {
      'accelerator_type': accelerator_type, 'topology': slice_.topology,
      'device_kind': devices[0].device_kind, 'chips': len(devices),
      'hosts': len({d.process_index for d in devices}),
      'global_batch': config.batch_size, 'batch_per_chip': config.batch_size // len(devices),
      'steps_per_epoch': run.steps_per_epoch,
      'hbm_bytes_per_chip': {'available': chip.hbm_bytes, 'training': training,
                             'evaluate_by_tta': evaluation},
      'fits': max(training['total'], *evaluation.values()) <= chip.hbm_bytes,
      'train_step_per_chip': {'flops': train.flops, 'bytes_accessed': train.bytes_accessed},
      'estimate': {'what': 'roofline of the datasheet peak and bandwidth against XLA cost '
                           'analysis; not measured',
                   'step_seconds': step_seconds, 'bound_by': bound,
                   'evaluation_seconds': eval_seconds,
                   'epoch_seconds': run.steps_per_epoch * step_seconds + eval_seconds},
      'compile_seconds': sum(p.compile_seconds for p in programs),
      'programs': [dataclasses.asdict(p) for p in programs],
  }


def _size(num_bytes: float) -> str:
  for unit, scale in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if num_bytes >= scale:
      return f'{num_bytes / scale:.1f} {unit}'
  return f'{num_bytes:.0f} B'


def format_report(report: dict[str, Any]) -> str:
  """The report as the lines `fer_flax.aot` prints."""
  hbm, estimate = report['hbm_bytes_per_chip'], report['estimate']
  training = hbm['training']
  lines = [f'{report["accelerator_type"]} ({report["topology"]}): {report["chips"]} x '
           f'{report["device_kind"]} on {report["hosts"]} host(s); batch '
           f'{report["global_batch"]} ({report["batch_per_chip"]} a chip), '
           f'{report["steps_per_epoch"]} steps an epoch',
           f'{"program":34s} {"compile s":>9s} {"arguments":>10s} {"outputs":>10s} '
           f'{"temporaries":>11s} {"code":>10s}']
  for p in report['programs']:
    lines.append(f'{p["name"]:34s} {p["compile_seconds"]:9.1f} {_size(p["argument_bytes"]):>10s} '
                 f'{_size(p["output_bytes"]):>10s} {_size(p["temp_bytes"]):>11s} '
                 f'{_size(p["generated_code_bytes"]):>10s}')
  parts = ', '.join(f'{k} {_size(v)}' for k, v in training.items() if k != 'total')
  evaluate = ', '.join(f'{tta} {_size(v)}' for tta, v in hbm['evaluate_by_tta'].items())
  lines += [f'HBM a chip ({_size(hbm["available"])}): training {_size(training["total"])} '
            f'({parts})',
            f'  evaluate by --tta: {evaluate}: {"fits" if report["fits"] else "DOES NOT FIT"}',
            f'train step: {report["train_step_per_chip"]["flops"] / 1e9:,.2f} GFLOPs a chip; '
            f'estimated (roofline, not measured): {estimate["step_seconds"] * 1e3:.2f} ms a step '
            f'(bound by {estimate["bound_by"]}), {estimate["epoch_seconds"]:.2f} s an epoch with '
            'its evaluation',
            f'compiled in {report["compile_seconds"]:.1f} s']
  return '\n'.join(lines)


def refuse_unless_fits(report: dict[str, Any]) -> None:
  """Raises the one-line error for a report whose config does not fit its slice."""
  if report['fits']:
    return
  hbm = report['hbm_bytes_per_chip']
  needed = max(hbm['training']['total'], *hbm['evaluate_by_tta'].values())
  raise _does_not_fit(report['accelerator_type'], report['batch_per_chip'],
                      f'it needs {_size(needed)} of HBM a chip, which has '
                      f'{_size(hbm["available"])}')
