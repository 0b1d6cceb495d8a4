"""8 data-parallel devices compute the same step as 1 device on the same global batch."""

import jax
import ml_collections
import numpy as np
import pytest

from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Parallel
from tests import helpers


def _three_steps(config, model, devices, batches):
  from fer_flax.train import optim, step_fns  # pylint: disable=g-import-not-at-top
  from fer_flax.train.plan import RunPlan
  schedule = optim.create_learning_rate_schedule(config, RunPlan.create(config, 10, 10))
  tx = optim.create_optimizer(config, schedule)
  parallel = Parallel(devices)
  state = step_fns.create_train_state(model, tx, jax.random.key(0), parallel, ema=True)
  step = step_fns.compile_train_steps(config, parallel)
  losses = []
  stacked = ({k: v[None] for k, v in batch.items()} for batch in batches)
  for batch in parallel.prefetch(stacked, size=2, sharding=parallel.stacked):
    assert len(batch['image'].addressable_shards) == len(devices)
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(metrics['loss'])
  return jax.device_get((state.params, state.batch_stats, state.ema, metrics, losses))


def _eight_devices_equal_one_device():
  """Run by the test below in a process with 8 CPU devices."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from fer_flax import models  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  config = tiny.get_config()
  # The whole recipe: per-image augmentation, CutMix/mixup across the sharded batch, smoothing
  # and the moving average must all be the same computation on 8 devices as on 1.
  config.augment.update(flip=True, crop_padding=2, rotation=10.0, scale=0.1, shift=0.05,
                        erase_probability=0.5, mixup_alpha=0.4, cutmix_alpha=1.0)
  config.label_smoothing = 0.1
  config.ema_decay = 0.9
  # SGD: parameter differences stay proportional to gradient differences (Adam's normalised
  # steps would amplify float noise in near-zero gradients to the size of a step).
  config.optimizer.update(name='sgd', learning_rate=0.05, momentum=0.9, nesterov=True)
  rng = np.random.default_rng(0)
  batches = [{'image': rng.integers(0, 256, (16, 48, 48, 1), dtype=np.uint8),
              'label': rng.integers(0, 7, 16).astype(np.int32)} for _ in range(3)]
  # seed_cnn (dropout), and a batch-norm model whose statistics must cover the global batch.
  small_compact = {'name': 'compact', 'stem_width': 4, 'widths': (8, 8), 'strides': (2, 2)}
  for model_config in (config.model.to_dict(), small_compact):
    model = models.create_model(ml_collections.ConfigDict(model_config))
    one = _three_steps(config, model, jax.devices()[:1], batches)
    eight = _three_steps(config, model, jax.devices(), batches)
    # Float tolerance: reductions over 8 shards add up in another order. A step that saw other
    # augmentations, or batch statistics of each device's 2 examples alone, would be far off.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-5), one, eight)
    assert one[3]['count'] == 16
  with pytest.raises(UserError, match='config.batch_size=12 is not divisible by the 8 devices'):
    Parallel().check_batch_size(12, 'batch_size')


def test_eight_devices_equal_one_device():
  helpers.run_on_eight_cpu_devices(_eight_devices_equal_one_device)


def _the_whitening_fit_on_eight_devices_equals_one():
  """Run by the test below in a process with 8 CPU devices."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from fer_flax import models  # pylint: disable=g-import-not-at-top
  from fer_flax.train import build, optim, step_fns  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.model = ml_collections.ConfigDict(
      {'name': 'vgg', 'stages': ((4,),), 'hidden': (8,), 'whiten': 2})
  model = models.create_model(config.model)
  # Noise blurred unevenly across and down: patch moments with distinct eigenvalues, none near
  # float32's rounding of the sums, so the filters are a stable function of the faces (the
  # smallest eigenvalues of real faces' moments move by percents with the order of the sums).
  rng = np.random.default_rng(0)
  noise = rng.uniform(0, 160, size=(3, 16, 48, 48, 1))  # 3 steps of 16 faces
  images = (noise + 0.5 * np.roll(noise, 1, axis=3) + 0.1 * np.roll(noise, 1, axis=2))
  images = images.astype(np.uint8)
  kernels = []
  for devices in (jax.devices()[:1], jax.devices()):
    parallel = Parallel(devices)
    state = step_fns.create_train_state(model, optim.create_optimizer(config, lambda _: 0.0),
                                        jax.random.key(0), parallel, ema=True)
    stacked = jax.device_put(images, parallel.stacked)
    fitted = build.whitening_fit(config, parallel)(state, stacked)
    kernels.append(jax.device_get(fitted.params['PatchWhitening_0']['kernel']))
  assert np.abs(kernels[0]).max() > 1.0  # fitted, not the zeros it starts from
  np.testing.assert_allclose(kernels[0], kernels[1], rtol=1e-4, atol=1e-4)


def test_the_whitening_fit_on_eight_devices_equals_one():
  helpers.run_on_eight_cpu_devices(_the_whitening_fit_on_eight_devices_equals_one)
