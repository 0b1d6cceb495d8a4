"""The compiled computations: the train state, the train step, and the evaluation step.

Each step is a pure function of its arguments; `compile_*` places it on a `Parallel` mesh.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from fer_flax import models
from fer_flax.core.mesh import Batch, Parallel
from fer_flax.data import augment, fer2013, progressive
from fer_flax.models import inference
from fer_flax.train import optim

Metrics = dict[str, jax.Array]


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


def state_initializer(model: Any, tx: optax.GradientTransformation,
                      ema: bool = False) -> Callable[[jax.Array], TrainState]:
  """`init(rng) -> TrainState`: parameters, batch-norm statistics and their moving average."""
  size = fer2013.IMAGE_SIZE

  def init(rng):
    variables = model.init(rng, jnp.zeros((1, size, size, 1), jnp.float32), train=False)
    variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
    return TrainState.create(apply_fn=model.apply, tx=tx, **variables,
                             ema=jax.tree.map(jnp.copy, variables) if ema else {})

  return init


def create_train_state(model: Any, tx: optax.GradientTransformation, rng: jax.Array,
                       parallel: Parallel, ema: bool = False) -> TrainState:
  """Initialises parameters (batch-norm statistics, moving average) replicated on the mesh."""
  return parallel.jit(state_initializer(model, tx, ema), out_shardings=parallel.replicated)(rng)


def initial_state(config: ml_collections.ConfigDict, model: Any, schedule: optax.Schedule,
                  parallel: Parallel) -> tuple[TrainState, jax.Array]:
  """A run's first state and the key its steps draw from, both from `config.seed`: what training
  starts from, and what `budget` times."""
  init_rng, rng = parallel.replicate(lambda: tuple(jax.random.split(jax.random.key(config.seed))))
  state = create_train_state(model, optim.create_optimizer(config, schedule), init_rng, parallel,
                             ema=bool(config.ema_decay))
  return state, rng


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *,
               config: ml_collections.ConfigDict, image_size: int = fer2013.IMAGE_SIZE,
               augmented: bool = True) -> tuple[TrainState, Metrics]:
  """One optimizer step on a global batch; metrics are sums, so they add up exactly.

  Augmentation, mixup/CutMix, label smoothing and the weights' moving average follow `config`
  (only flips when not `augmented`: a run's clean last epochs); the augmented faces are
  downsampled to `image_size` (progressive resizing).
  """
  dropout_rng, augment_rng, mix_rng = jax.random.split(jax.random.fold_in(rng, state.step), 3)
  augment_config = config.augment if augmented else augment.flips_only(config.augment)
  images = augment.augment_images(models.preprocess(batch['image']), augment_rng, augment_config,
                                  batch.get('flip'))
  images = progressive.resize(images, image_size)
  targets = jax.nn.one_hot(batch['label'], fer2013.NUM_CLASSES)
  targets = optax.smooth_labels(targets, config.label_smoothing)
  images, targets = augment.mix(images, targets, mix_rng, augment_config)

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


def train_steps(state: TrainState, batches: Batch, rng: jax.Array,
                image_size: int = fer2013.IMAGE_SIZE, augmented: bool = True, *,
                config: ml_collections.ConfigDict, unroll: bool) -> tuple[TrainState, Metrics]:
  """One train step per batch of `batches` ([steps, batch, ...]) in one compiled call.

  `unroll` writes the steps out instead of looping: XLA:CPU runs a step inside a while loop far
  slower (docs/speed.md), and `scan(unroll=True)` still loops when there is one step.
  """
  step = functools.partial(train_step, config=config, image_size=image_size, augmented=augmented)
  num_steps = batches['label'].shape[0]
  if not unroll and num_steps > 1:
    state, metrics = jax.lax.scan(lambda s, batch: step(s, batch, rng), state, batches)
    return state, jax.tree.map(lambda m: m.sum(0), metrics)
  metrics = []
  for i in range(num_steps):
    state, step_metrics = step(state, jax.tree.map(operator.itemgetter(i), batches), rng)
    metrics.append(step_metrics)
  return state, jax.tree.map(lambda *m: sum(m), *metrics)


def compile_train_steps(config: ml_collections.ConfigDict, parallel: Parallel) -> Callable:
  """`train_steps` jitted for the mesh: (state, stacked batches, rng[, image size, augmented])
  -> (state, metrics); each image size, and the clean epochs, compile once.

  The state's buffers are donated: the step updates it in place.
  """
  return parallel.jit(functools.partial(train_steps, config=config, unroll=parallel.on_cpu),
                      in_shardings=(parallel.replicated, parallel.stacked, parallel.replicated),
                      out_shardings=(parallel.replicated, parallel.replicated),
                      static_argnums=(3, 4), donate_argnums=(0,))


def eval_step(variables: dict[str, Any], batch: Batch, *, apply_fn: Callable,
              tta: str = 'none') -> dict[str, jax.Array]:
  """Per-example probabilities with the batch's labels and mask (False on padding)."""
  return {'probabilities': inference.probabilities(apply_fn, variables, batch['image'], tta),
          'label': batch['label'], 'mask': batch['mask']}


def compile_eval_step(apply_fn: Callable, parallel: Parallel, tta: str = 'none') -> Callable:
  """`eval_step` jitted for the mesh; every process gets every example's output."""
  return parallel.jit(functools.partial(eval_step, apply_fn=apply_fn, tta=tta),
                      in_shardings=(parallel.replicated, parallel.data),
                      out_shardings=parallel.replicated)


@jax.jit
def all_finite(tree: Any) -> jax.Array:
  """Whether every floating-point value of `tree` is finite."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def summarize(metrics: Iterable[Metrics]) -> dict[str, float]:
  """Mean loss and accuracy from per-call sums, fetched from the devices in one transfer."""
  fetched = jax.device_get(list(metrics))
  total = jax.tree.map(lambda *xs: np.sum(np.stack(xs), axis=0), *fetched)
  count = max(float(total['count']), 1.0)
  return {'loss': float(total['loss']) / count, 'accuracy': float(total['correct']) / count,
          'examples': int(total['count'])}
