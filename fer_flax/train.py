"""Training and evaluation: one jitted, data-parallel code path from 1 CPU to many devices.

Parameters are replicated and batches sharded over a 1-D `data` mesh of every device; `jax.jit`
inserts the gradient all-reduce (the JAX docs recommend this over `pmap`, now in maintenance).
"""

from __future__ import annotations

import functools
import json
import pathlib
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

from fer_flax import fer2013, input_pipeline, models, tfds_builder, writers
from fer_flax.errors import UserError

TrainState = train_state.TrainState
Metrics = dict[str, jax.Array]

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
# Fields that may differ when a run resumes: where the same data lives, not what it is.
_RELOCATABLE_FIELDS = ('data.path', 'data.tfds_data_dir')


def preprocess(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] images, as stored, to the float32 [0, 1] the models take."""
  return images.astype(jnp.float32) / 255.0


def create_learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                                  total_steps: int) -> optax.Schedule:
  """Linear warm-up, then constant or cosine decay to zero."""
  opt = config.optimizer
  warmup_steps = int(opt.warmup_epochs * steps_per_epoch)
  if opt.schedule == 'constant':
    main = optax.constant_schedule(opt.learning_rate)
  elif opt.schedule == 'cosine':
    main = optax.cosine_decay_schedule(opt.learning_rate, max(total_steps - warmup_steps, 1))
  else:
    raise UserError(f'unknown schedule {opt.schedule!r} in config.optimizer.schedule; '
                    'choose constant or cosine')
  if not warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, opt.learning_rate, warmup_steps)
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


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
  """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               label_smoothing: float) -> tuple[TrainState, Metrics]:
  """One optimizer step on a global batch; metrics are sums, so they add up exactly."""
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, preprocess(batch['image']), train=True,
                            rngs={'dropout': dropout_rng})
    loss = cross_entropy(logits, batch['label'], label_smoothing)
    return loss.mean(), (loss, logits)

  grads, (loss, logits) = jax.grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  correct = jnp.argmax(logits, -1) == batch['label']
  return state, {'loss': loss.sum(), 'correct': correct.sum(), 'count': jnp.float32(loss.size)}


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> Metrics:
  """Loss and accuracy sums over the unmasked examples of a padded batch."""
  logits = state.apply_fn({'params': state.params}, preprocess(batch['image']), train=False)
  mask = batch['mask']
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  correct = jnp.argmax(logits, -1) == batch['label']
  return {'loss': jnp.where(mask, loss, 0).sum(), 'correct': (correct & mask).sum(),
          'count': mask.sum().astype(jnp.float32)}


def summarize(metrics: Iterable[Metrics]) -> dict[str, float]:
  """Mean loss and accuracy from per-step sums (one device fetch for all of them)."""
  total = jax.tree.map(lambda *xs: np.sum(xs), *jax.device_get(list(metrics)))
  count = max(float(total['count']), 1.0)
  return {'loss': float(total['loss']) / count, 'accuracy': float(total['correct']) / count,
          'examples': int(total['count'])}


class Parallel:
  """The device mesh, the shardings, and the jitted steps placed on them."""

  def __init__(self, devices: list[jax.Device] | None = None):
    self.mesh = Mesh(np.asarray(devices or jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def check_batch_size(self, batch_size: int, field: str) -> None:
    if batch_size % self.num_devices:
      raise UserError(f'config.{field}={batch_size} is not divisible by the {self.num_devices} '
                      f'devices; use a multiple of {self.num_devices}')

  def jit_train_step(self, label_smoothing: float) -> Callable:
    return jax.jit(functools.partial(train_step, label_smoothing=label_smoothing),
                   in_shardings=(self.replicated, self.data, self.replicated),
                   out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

  def jit_eval_step(self) -> Callable:
    return jax.jit(eval_step, in_shardings=(self.replicated, self.data),
                   out_shardings=self.replicated)

  def to_global(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles every process's local batch into one batch sharded over the mesh."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.data, x),
                        local_batch)

  def prefetch(self, batches: Iterable[dict[str, np.ndarray]],
               size: int) -> Iterator[dict[str, jax.Array]]:
    """Keeps `size` batches in flight to the devices while the current one computes."""
    queue = []
    for batch in batches:
      queue.append(self.to_global(batch))
      if len(queue) > size:
        yield queue.pop(0)
    yield from queue


def create_train_state(model: Any, tx: optax.GradientTransformation, rng: jax.Array,
                       sharding: NamedSharding) -> TrainState:
  """Initialises parameters directly into `sharding`."""
  size = fer2013.IMAGE_SIZE

  def init(rng):
    params = model.init(rng, jnp.zeros((1, size, size, 1), jnp.float32), train=False)['params']
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  return jax.jit(init, out_shardings=sharding)(rng)


def evaluate(state: TrainState, eval_step_fn: Callable, batches: Iterable[dict[str, jax.Array]]
             ) -> dict[str, float]:
  return summarize(eval_step_fn(state, batch) for batch in batches)


def _flatten(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def check_or_save_config(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                         resuming: bool) -> None:
  """Saves the run's config in the workdir, or refuses to resume a run made with another one.

  Without checkpoints there is nothing to protect: a run that failed at start-up (a typo in a
  field, say) is simply started again with the corrected config.
  """
  path = workdir / CONFIG_FILE
  current = json.loads(config.to_json_best_effort())
  if resuming and path.exists():
    saved = _flatten(json.loads(path.read_text()))
    now = _flatten(current)
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in _RELOCATABLE_FIELDS and saved.get(k) != now.get(k))
    if changed:
      diffs = ', '.join(f'{k}: {saved.get(k)!r} -> {now.get(k)!r}' for k in changed[:3])
      raise UserError(f'{workdir} holds a run with a different config ({diffs}); use a new '
                      '--workdir, or repeat the overrides that run used (see its config.json)')
    return
  path.write_text(json.dumps(current, indent=2, sort_keys=True) + '\n')


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise UserError(f'{path} does not exist; pass the --workdir of a training run')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def checkpoint_manager(workdir: str | pathlib.Path, config: ml_collections.ConfigDict,
                       read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the latest `config.keep_checkpoints` plus the best by eval accuracy."""
  best = ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m['accuracy'], n=1,
                                       keep_checkpoints_without_metrics=False)
  options = ocp.CheckpointManagerOptions(
      best_fn=lambda m: m['accuracy'], best_mode='max', read_only=read_only,
      cleanup_tmp_directories=not read_only,  # A save cut short by a crash leaves a tmp dir.
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
          [ocp.checkpoint_managers.LatestN(config.keep_checkpoints), best]))
  directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
  return ocp.CheckpointManager(directory, options=options)


def restore(manager: ocp.CheckpointManager, state: TrainState, step: int) -> TrainState:
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains per `config` in `workdir`, resuming from its latest checkpoint if there is one."""
  workdir_path = pathlib.Path(workdir)
  manager = checkpoint_manager(workdir_path, config)
  start_step = manager.latest_step() or 0
  check_or_save_config(config, workdir_path, resuming=bool(start_step))
  parallel = Parallel()
  parallel.check_batch_size(config.batch_size, 'batch_size')
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  model = models.create_model(config.model, num_classes=len(fer2013.EMOTIONS))
  builder = tfds_builder.prepare(config.data.path, config.data.tfds_data_dir)
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_data = input_pipeline.TrainData(builder, config.data.train_split, config.batch_size,
                                        config.seed, **process)
  eval_ds, _ = input_pipeline.eval_data(builder, config.data.eval_split, config.eval_batch_size,
                                        **process)
  steps_per_epoch = train_data.steps_per_epoch
  total_steps = steps_per_epoch * config.num_epochs

  schedule = create_learning_rate_schedule(config, steps_per_epoch, total_steps)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(model, create_optimizer(config, schedule), init_rng,
                             parallel.replicated)
  if start_step:
    state = restore(manager, state, start_step)
  if start_step >= total_steps:
    logging.info('Run in %s already finished at step %d (%s); nothing to do.', workdir, start_step,
                 _best_summary(manager, config))
    return state

  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('%s: %s parameters; %d %s device(s), %d process(es); %d steps/epoch, %d epochs; %s',
               config.model.name, f'{num_params:,}', parallel.num_devices,
               jax.devices()[0].platform, jax.process_count(), steps_per_epoch, config.num_epochs,
               f'resuming at step {start_step}' if start_step else 'starting')
  writer = writers.create_writer(workdir_path, start_step, jax.process_index() == 0)
  p_train_step = parallel.jit_train_step(config.label_smoothing)
  p_eval_step = parallel.jit_eval_step()
  dropout_rng = jax.device_put(dropout_rng, parallel.replicated)
  batches = parallel.prefetch(train_data.iterate(start_step), config.data.prefetch)

  window, window_start, window_step = [], time.perf_counter(), start_step
  for step in range(start_step + 1, total_steps + 1):
    state, metrics = p_train_step(state, next(batches), dropout_rng)
    window.append(metrics)
    end_of_epoch = step % steps_per_epoch == 0
    if step % config.log_every_steps == 0 or end_of_epoch:
      train = summarize(window)
      elapsed = time.perf_counter() - window_start
      steps_per_sec = (step - window_step) / elapsed
      writer.write_scalars(step, {'train/loss': train['loss'], 'train/accuracy': train['accuracy'],
                                  'train/learning_rate': float(schedule(step - 1)),
                                  'train/images_per_sec': steps_per_sec * config.batch_size})
      logging.info('step %d/%d (epoch %.2f/%d): %.0f images/s, ETA %s', step, total_steps,
                   step / steps_per_epoch, config.num_epochs, steps_per_sec * config.batch_size,
                   _format_seconds((total_steps - step) / steps_per_sec))
      window, window_start, window_step = [], time.perf_counter(), step
    checkpoint_metrics = None
    if end_of_epoch:
      result = evaluate(state, p_eval_step, map(parallel.to_global, eval_ds.as_numpy_iterator()))
      split = config.data.eval_split
      writer.write_scalars(step, {f'{split}/loss': result['loss'],
                                  f'{split}/accuracy': result['accuracy']})
      checkpoint_metrics = {'accuracy': result['accuracy'], 'loss': result['loss']}
    if end_of_epoch or (config.checkpoint_every_steps
                        and step % config.checkpoint_every_steps == 0):
      manager.save(step, args=ocp.args.StandardSave(state), metrics=checkpoint_metrics)
      writer.flush()
    if end_of_epoch:
      window_start = time.perf_counter()

  manager.wait_until_finished()
  writer.close()
  logging.info('Finished %d steps (%s).', total_steps, _best_summary(manager, config))
  return state
