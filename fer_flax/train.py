"""Training and evaluation: one jitted, data-parallel code path from 1 CPU to many devices.

Parameters are replicated and batches sharded over a 1-D `data` mesh of every device; `jax.jit`
inserts the gradient all-reduce (the JAX docs recommend this over `pmap`, now in maintenance).
Batches come from tf.data (`config.data.pipeline='tfds'`) or from the split held on the devices
(`'memory'`, which needs no TensorFlow and can run several steps per compiled call).
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fer_flax import augment, checkpoints, fer2013, in_memory, models, preemption, writers
from fer_flax.errors import UserError

Metrics = dict[str, jax.Array]
NUM_CLASSES = len(fer2013.EMOTIONS)


class TrainState(train_state.TrainState):
  """Parameters, optimizer state, batch-norm statistics, and their moving average.

  `batch_stats` is empty for models without batch norm; `ema` is empty unless the config keeps an
  exponential moving average of the weights, which evaluation then uses.
  """
  batch_stats: Any
  ema: Any

  def variables(self) -> dict[str, Any]:
    """What the model's `apply` takes for evaluation: the moving average when there is one."""
    return self.ema or {'params': self.params, 'batch_stats': self.batch_stats}


def create_learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                                  total_steps: int) -> optax.Schedule:
  """Linear warm-up then constant or cosine decay to zero, or a one-cycle schedule.

  One-cycle (Smith & Topin, 2019) warms up by cosine over the warm-up epochs from
  peak / onecycle_div_factor, then anneals to peak / onecycle_div_factor / onecycle_final_div_factor.
  With `optimizer.reference_batch_size`, the peak scales linearly with the batch size (Goyal et
  al., 2017), so one config serves a laptop's batch and an accelerator's.
  """
  opt = config.optimizer
  peak = opt.learning_rate
  if opt.reference_batch_size:
    peak *= config.batch_size / opt.reference_batch_size
  warmup_steps = int(opt.warmup_epochs * steps_per_epoch)
  if opt.schedule == 'onecycle':
    return optax.cosine_onecycle_schedule(
        total_steps, peak, pct_start=warmup_steps / total_steps,
        div_factor=opt.onecycle_div_factor, final_div_factor=opt.onecycle_final_div_factor)
  if opt.schedule == 'constant':
    main = optax.constant_schedule(peak)
  elif opt.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
  else:
    raise UserError(f'unknown schedule {opt.schedule!r} in config.optimizer.schedule; '
                    'choose constant, cosine or onecycle')
  if not warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def _decay_mask(params: Any) -> Any:
  """Weight decay applies to kernels only, never to biases or normalisation scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optax optimizer named in `config.optimizer`."""
  opt = config.optimizer
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'adamw':
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay, mask=_decay_mask))
    return optax.chain(*parts)
  if opt.weight_decay:  # Coupled (L2) decay, as SGD and Adam apply it.
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask))
  if opt.name == 'adam':
    parts.append(optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps))
  elif opt.name == 'sgd':
    parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  else:
    raise UserError(f'unknown optimizer {opt.name!r} in config.optimizer.name; '
                    'choose adam, adamw or sgd')
  return optax.chain(*parts)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               config: ml_collections.ConfigDict) -> tuple[TrainState, Metrics]:
  """One optimizer step on a global batch; metrics are sums, so they add up exactly.

  Augmentation, mixup/CutMix, label smoothing and the weights' moving average follow `config`.
  """
  dropout_rng, augment_rng, mix_rng = jax.random.split(jax.random.fold_in(rng, state.step), 3)
  images = augment.augment_images(models.preprocess(batch['image']), augment_rng, config.augment)
  targets = jax.nn.one_hot(batch['label'], NUM_CLASSES)
  targets = optax.smooth_labels(targets, config.label_smoothing)
  images, targets = augment.mix(images, targets, mix_rng, config.augment)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images,
        train=True, rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy(logits, targets)
    return loss.mean(), (loss, logits, updates.get('batch_stats', state.batch_stats))

  grads, (loss, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if config.ema_decay:
    # The usual warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates): early
    # averages forget the random initialisation quickly.
    decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    current = {'params': state.params, 'batch_stats': state.batch_stats}
    state = state.replace(ema=jax.tree.map(lambda e, p: decay * e + (1 - decay) * p,
                                           state.ema, current))
  correct = jnp.argmax(logits, -1) == batch['label']
  return state, {'loss': loss.sum(), 'correct': correct.sum(), 'count': jnp.float32(loss.size)}


def train_steps(state: TrainState, arrays: in_memory.Arrays, permutation: jax.Array,
                first_index: jax.Array, rng: jax.Array, *, config: ml_collections.ConfigDict,
                data: in_memory.TrainData, num_steps: int,
                unroll: bool) -> tuple[TrainState, Metrics]:
  """`num_steps` train steps in one compiled call, their batches gathered on the devices.

  `unroll` writes the steps out instead of looping: XLA:CPU ran a seed_cnn step ~50x slower
  inside a while loop (and `scan(unroll=True)` still loops when `num_steps` is 1).
  """

  def body(state, index):
    return train_step(state, data.batch(arrays, permutation, index), rng, config=config)

  if not unroll:
    state, metrics = jax.lax.scan(body, state, first_index + jnp.arange(num_steps))
    return state, jax.tree.map(lambda m: m.sum(0), metrics)
  metrics = []
  for offset in range(num_steps):
    state, step_metrics = body(state, first_index + offset)
    metrics.append(step_metrics)
  return state, jax.tree.map(lambda *m: sum(m), *metrics)


def tta_log_probs(apply_fn: Callable, variables: dict[str, Any], images: jax.Array,
                  tta: str = 'none') -> jax.Array:
  """[B, classes] log-probabilities of uint8 images, averaged in probability over TTA views."""
  images = models.preprocess(images)
  views = augment.tta_views(images, tta)
  num_views, batch_size = views.shape[:2]
  logits = apply_fn(variables, views.reshape(-1, *images.shape[1:]), train=False)
  log_probs = jax.nn.log_softmax(logits).reshape(num_views, batch_size, -1)
  return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(num_views)


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], *, apply_fn: Callable,
              tta: str = 'none') -> Metrics:
  """Sums of loss and accuracy, and the confusion matrix, over the unmasked examples of a batch."""
  log_probs = tta_log_probs(apply_fn, variables, batch['image'], tta)
  labels, mask = batch['label'], batch['mask']
  loss = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  predictions = jnp.argmax(log_probs, -1)
  num_classes = log_probs.shape[-1]
  confusion = jnp.zeros((num_classes, num_classes), jnp.float32).at[labels, predictions].add(mask)
  return {'loss': jnp.where(mask, loss, 0).sum(), 'correct': ((predictions == labels) & mask).sum(),
          'count': mask.sum().astype(jnp.float32), 'confusion': confusion}


def predict_step(variables: dict[str, Any], batch: dict[str, jax.Array], *, apply_fn: Callable,
                 tta: str = 'none') -> dict[str, jax.Array]:
  """Per-example probabilities with the batch's labels and mask, for ensembles and reports."""
  probabilities = jnp.exp(tta_log_probs(apply_fn, variables, batch['image'], tta))
  return {'probabilities': probabilities, 'label': batch['label'], 'mask': batch['mask']}


def summarize(metrics: Iterable[Metrics]) -> dict[str, Any]:
  """Mean loss and accuracy (and the summed confusion matrix) from per-step sums.

  All steps' metrics are fetched from the devices in one transfer.
  """
  fetched = jax.device_get(list(metrics))
  total = jax.tree.map(lambda *xs: np.sum(np.stack(xs), axis=0), *fetched)
  count = max(float(total['count']), 1.0)
  summary = {'loss': float(total['loss']) / count, 'accuracy': float(total['correct']) / count,
             'examples': int(total['count'])}
  if 'confusion' in total:
    summary['confusion'] = total['confusion'].astype(int).tolist()
  return summary


class Parallel:
  """The device mesh, the shardings, and the jitted steps placed on them."""

  def __init__(self, devices: list[jax.Device] | None = None,
               cpu_compiler_options: dict[str, Any] | None = None):
    self.mesh = Mesh(np.asarray(devices or jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))
    self.on_cpu = self.mesh.devices.flat[0].platform == 'cpu'
    self.compiler_options = dict(cpu_compiler_options or {}) if self.on_cpu else {}

  def jit(self, fn: Callable, **kwargs) -> Callable:
    return jax.jit(fn, compiler_options=self.compiler_options or None, **kwargs)

  def replicate(self, make: Callable[[], Any]) -> Any:
    """`make()`'s value on every device, from a compiled call: `device_put` cannot place a host
    value on other processes' devices."""
    return self.jit(make, out_shardings=self.replicated)()

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def check_batch_size(self, batch_size: int, field: str) -> None:
    if batch_size % self.num_devices:
      raise UserError(f'config.{field}={batch_size} is not divisible by the {self.num_devices} '
                      f'devices; use a multiple of {self.num_devices}')

  def jit_train_step(self, config: ml_collections.ConfigDict) -> Callable:
    return self.jit(functools.partial(train_step, config=config),
                   in_shardings=(self.replicated, self.data, self.replicated),
                   out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

  def jit_train_steps(self, config: ml_collections.ConfigDict, data: in_memory.TrainData,
                      num_steps: int) -> Callable:
    step_fn = functools.partial(train_steps, config=config, data=data, num_steps=num_steps,
                                unroll=self.on_cpu)
    return self.jit(step_fn, out_shardings=(self.replicated, self.replicated),
                    donate_argnums=(0,))

  def jit_eval_step(self, apply_fn: Callable, tta: str = 'none') -> Callable:
    return self.jit(functools.partial(eval_step, apply_fn=apply_fn, tta=tta),
                   in_shardings=(self.replicated, self.data), out_shardings=self.replicated)

  def jit_predict_step(self, apply_fn: Callable, tta: str = 'none') -> Callable:
    return self.jit(functools.partial(predict_step, apply_fn=apply_fn, tta=tta),
                   in_shardings=(self.replicated, self.data), out_shardings=self.replicated)

  def to_global(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles every process's local batch into one batch sharded over the mesh."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.data, x),
                        local_batch)

  def prefetch(self, batches: Iterable[dict[str, np.ndarray]],
               size: int) -> Iterator[dict[str, jax.Array]]:
    """Keeps `size` batches in flight to the devices while the current one computes."""
    queue = collections.deque()
    for batch in batches:
      queue.append(self.to_global(batch))
      if len(queue) > size:
        yield queue.popleft()
    yield from queue


def create_train_state(model: Any, tx: optax.GradientTransformation, rng: jax.Array,
                       sharding: NamedSharding, ema: bool = False) -> TrainState:
  """Initialises parameters (batch-norm statistics, moving average) directly into `sharding`."""
  size = fer2013.IMAGE_SIZE

  def init(rng):
    variables = model.init(rng, jnp.zeros((1, size, size, 1), jnp.float32), train=False)
    variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
    return TrainState.create(apply_fn=model.apply, tx=tx, **variables,
                             ema=jax.tree.map(jnp.copy, variables) if ema else {})

  return jax.jit(init, out_shardings=sharding)(rng)


def evaluate(variables: dict[str, Any], eval_step_fn: Callable,
             batches: Iterable[dict[str, jax.Array]]) -> dict[str, Any]:
  """Loss, accuracy and confusion matrix of `variables` over one pass of eval batches."""
  return summarize(eval_step_fn(variables, batch) for batch in batches)


def _best_summary(manager: ocp.CheckpointManager, config: ml_collections.ConfigDict) -> str:
  best = manager.best_step()
  metrics = manager.metrics(best) if best is not None else None
  if not metrics:
    return 'no evaluated checkpoint'
  return f'best {config.data.eval_split} accuracy {metrics["accuracy"]:.4f} at step {best}'


def _format_seconds(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'


class TfdsFeed:
  """tf.data batches from the prepared TFDS dataset, one compiled step per batch."""

  def __init__(self, config: ml_collections.ConfigDict, parallel: Parallel):
    # TensorFlow is imported here, so that the in-memory path runs without it.
    from fer_flax import input_pipeline, tfds_builder  # pylint: disable=g-import-not-at-top
    if config.steps_per_call != 1:
      raise UserError(f'config.steps_per_call={config.steps_per_call} needs the in-memory input: '
                      'add --config.data.pipeline=memory, or set steps_per_call to 1')
    builder = tfds_builder.prepare(config.data.path, config.data.tfds_data_dir)
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    self.train = input_pipeline.TrainData(builder, config.data.train_split, config.batch_size,
                                          config.seed, **process)
    self._eval, _ = input_pipeline.eval_data(builder, config.data.eval_split,
                                             config.eval_batch_size, **process)
    self.steps_per_epoch = self.train.steps_per_epoch
    self._parallel, self._config = parallel, config

  def eval_batches(self) -> Iterator[dict[str, jax.Array]]:
    return map(self._parallel.to_global, self._eval.as_numpy_iterator())

  def calls(self, start: int, stop: int) -> Iterator[tuple[int, Callable]]:
    step_fn = self._parallel.jit_train_step(self._config)
    batches = self._parallel.prefetch(self.train.iterate(start), self._config.data.prefetch)
    for _ in range(start, stop):
      yield 1, lambda state, rng: step_fn(state, next(batches), rng)


class MemoryFeed:
  """The splits held on the devices, `config.steps_per_call` steps per compiled call."""

  def __init__(self, config: ml_collections.ConfigDict, parallel: Parallel):
    if config.steps_per_call < 1:
      raise UserError(f'config.steps_per_call={config.steps_per_call}; use 1 or more')
    source = fer2013.Source(config.data.path)
    self.train = in_memory.TrainData(*in_memory.load_split(source, config.data.train_split),
                                     config.batch_size, config.seed, parallel.mesh)
    self._eval = in_memory.eval_batches(*in_memory.load_split(source, config.data.eval_split),
                                        config.eval_batch_size, parallel.data)
    self.steps_per_epoch = self.train.steps_per_epoch
    self._parallel, self._config = parallel, config

  def eval_batches(self) -> list[dict[str, jax.Array]]:
    return self._eval

  def _run(self, steps_fn: Callable, permutation: jax.Array, index: int, state: TrainState,
           rng: jax.Array) -> tuple[TrainState, Metrics]:
    return steps_fn(state, self.train.arrays, permutation, jnp.int32(index), rng)

  def calls(self, start: int, stop: int) -> Iterator[tuple[int, Callable]]:
    compiled: dict[int, Callable] = {}
    step = start
    while step < stop:
      epoch, index = divmod(step, self.steps_per_epoch)
      permutation = self.train.permutation(epoch)
      while index < self.steps_per_epoch and step < stop:
        n = min(self._config.steps_per_call, self.steps_per_epoch - index, stop - step)
        if n not in compiled:
          compiled[n] = self._parallel.jit_train_steps(self._config, self.train, n)
        yield n, functools.partial(self._run, compiled[n], permutation, index)
        index, step = index + n, step + n


def create_feed(config: ml_collections.ConfigDict, parallel: Parallel) -> TfdsFeed | MemoryFeed:
  """The input path `config.data.pipeline` names.

  A feed has `steps_per_epoch`, `train` (its training data), `eval_batches()`, and
  `calls(start, stop)`, which yields (number of steps, function advancing the state by that many
  steps); calls never cross the end of an epoch.
  """
  if config.data.pipeline == 'tfds':
    return TfdsFeed(config, parallel)
  if config.data.pipeline == 'memory':
    return MemoryFeed(config, parallel)
  raise UserError(f'unknown input pipeline {config.data.pipeline!r} in config.data.pipeline; '
                  'choose tfds (tf.data) or memory (on the devices, no TensorFlow)')


def _crossed(previous: int, step: int, every: int) -> bool:
  """Whether a call that went from `previous` to `step` passed a multiple of `every`."""
  return bool(every) and step // every > previous // every


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains per `config` in `workdir`, resuming from its latest checkpoint if there is one."""
  workdir_path = checkpoints.workdir_path(workdir)
  manager = checkpoints.manager(workdir_path, config)
  start_step = manager.latest_step() or 0
  checkpoints.check_or_save_config(config, workdir_path, resuming=bool(start_step))
  parallel = Parallel(cpu_compiler_options=config.cpu_compiler_options.to_dict())
  parallel.check_batch_size(config.batch_size, 'batch_size')
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  model = models.create_model(config.model, num_classes=len(fer2013.EMOTIONS))
  feed = create_feed(config, parallel)
  steps_per_epoch = feed.steps_per_epoch
  total_steps = steps_per_epoch * config.num_epochs

  schedule = create_learning_rate_schedule(config, steps_per_epoch, total_steps)
  init_rng, dropout_rng = parallel.replicate(
      lambda: tuple(jax.random.split(jax.random.key(config.seed))))
  state = create_train_state(model, create_optimizer(config, schedule), init_rng,
                             parallel.replicated, ema=bool(config.ema_decay))
  if start_step:
    state = checkpoints.restore(manager, state, start_step)
  if start_step >= total_steps:
    logging.info('Run in %s already finished at step %d (%s); nothing to do.', workdir, start_step,
                 _best_summary(manager, config))
    return state

  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('%s: %s parameters; %d %s device(s), %d process(es); %s input; %d steps/epoch, '
               '%d epochs; %s', config.model.name, f'{num_params:,}', parallel.num_devices,
               jax.devices()[0].platform, jax.process_count(), config.data.pipeline,
               steps_per_epoch, config.num_epochs,
               f'resuming at step {start_step}' if start_step else 'starting')
  writer = writers.create_writer(workdir_path, start_step, jax.process_index() == 0)
  p_eval_step = parallel.jit_eval_step(model.apply)

  # Throughput counts training time only: evaluation and checkpointing are left out.
  window, window_step, window_seconds, tick = [], start_step, 0.0, time.perf_counter()
  step, preempted = start_step, False
  with preemption.Watch() as watch:
    for call, (num_steps, run_steps) in enumerate(feed.calls(start_step, total_steps)):
      state, metrics = run_steps(state, dropout_rng)
      previous, step = step, step + num_steps
      window.append(metrics)
      if _crossed(previous, step, config.log_every_steps) or step == total_steps:
        train = summarize(window)  # Waits for the window's steps to finish.
        window_seconds += time.perf_counter() - tick
        images_per_sec = (step - window_step) * config.batch_size / window_seconds
        writer.write_scalars(step, {'train/loss': train['loss'],
                                    'train/accuracy': train['accuracy'],
                                    'train/learning_rate': float(schedule(step - 1)),
                                    'train/images_per_sec': images_per_sec})
        logging.info('step %d/%d (epoch %.2f/%d): %.0f images/s, ETA %s', step, total_steps,
                     step / steps_per_epoch, config.num_epochs, images_per_sec,
                     _format_seconds((total_steps - step) * config.batch_size / images_per_sec))
        window, window_step, window_seconds, tick = [], step, 0.0, time.perf_counter()
      end_of_epoch = step % steps_per_epoch == 0
      preempted = watch.reached(call) and step < total_steps
      if not (end_of_epoch or preempted or _crossed(previous, step, config.checkpoint_every_steps)):
        continue
      jax.block_until_ready(state)
      window_seconds += time.perf_counter() - tick
      checkpoint_metrics = None
      if end_of_epoch:
        result = evaluate(state.variables(), p_eval_step, feed.eval_batches())
        split = config.data.eval_split
        writer.write_scalars(step, {f'{split}/loss': result['loss'],
                                    f'{split}/accuracy': result['accuracy']})
        checkpoint_metrics = {'accuracy': result['accuracy'], 'loss': result['loss']}
      manager.save(step, args=ocp.args.StandardSave(state), metrics=checkpoint_metrics)
      writer.flush()
      if preempted:
        break
      tick = time.perf_counter()

  manager.wait_until_finished()
  writer.close()
  if preempted:
    raise preemption.Preempted(step)
  logging.info('Finished %d steps (%s).', total_steps, _best_summary(manager, config))
  return state
