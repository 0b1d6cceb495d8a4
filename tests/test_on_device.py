"""The in-memory input path: trains with TensorFlow absent, shuffles exactly, resumes exactly."""

import functools
import shutil

import jax
import numpy as np

from fer_flax.core.mesh import Parallel
from fer_flax.data import on_device
from fer_flax.train import loop
from fer_flax.train.plan import RunPlan
from tests import helpers


def test_each_epoch_visits_every_example_once_in_an_order_set_by_seed_and_epoch():
  images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1) * np.ones((1, 48, 48, 1), np.uint8)
  labels = np.arange(20, dtype=np.int32)
  feed = on_device.DeviceFeed(images, labels, 8, seed=3, steps_per_call=1, parallel=Parallel())
  assert feed.steps_per_epoch == 2  # 20 // 8; the last 4 of each epoch's order wait a turn

  def epoch(e):
    order = feed.permutation(e)
    seen = [jax.device_get(feed.gather(order, i, 1)) for i in range(feed.steps_per_epoch)]
    for b in seen:
      np.testing.assert_array_equal(b['image'][0, :, 7, 7, 0], b['label'][0])
    return np.concatenate([b['label'][0] for b in seen])

  first = epoch(0)
  assert len(set(first)) == 16
  np.testing.assert_array_equal(epoch(0), first)
  assert not np.array_equal(epoch(1), first)
  full = np.sort(np.asarray(feed.permutation(5)))
  np.testing.assert_array_equal(full, np.arange(20))
  stacked = jax.device_get(feed.gather(feed.permutation(2), 0, 2))  # both steps of epoch 2
  assert stacked['label'].shape == (2, 8)
  np.testing.assert_array_equal(stacked['label'].ravel(), np.asarray(feed.permutation(2))[:16])


def test_alternating_flips_show_each_face_both_ways_every_two_epochs():
  images, labels = np.zeros((64, 48, 48, 1), np.uint8), np.arange(64, dtype=np.int32)
  feed = on_device.DeviceFeed(images, labels, 16, seed=3, steps_per_call=4, parallel=Parallel(),
                              alternate_flips=True)

  def sides(epoch):  # each example's side in `epoch`, by its label
    batches = jax.device_get(next(feed.batches(epoch * 4, epoch * 4 + 4)))
    return batches['flip'].ravel()[np.argsort(batches['label'].ravel())]

  first = sides(0)
  assert 16 <= first.sum() <= 48  # a coin per face in the first epoch
  np.testing.assert_array_equal(sides(1), ~first)
  np.testing.assert_array_equal(sides(2), first)
  plain = on_device.DeviceFeed(images, labels, 16, seed=3, steps_per_call=4, parallel=Parallel())
  assert 'flip' not in next(plain.batches(0, 4))


def test_several_steps_per_call_train_as_one_step_per_call(tmp_path, small_archive):
  one = loop.train_and_evaluate(helpers.memory_config(small_archive, num_epochs=1),
                                str(tmp_path / '1'))
  five = loop.train_and_evaluate(
      helpers.memory_config(small_archive, num_epochs=1, steps_per_call=5), str(tmp_path / '5'))
  assert int(five.step) == int(one.step) == 17  # calls of 5, 5, 5 and 2 steps
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               (one.params, one.opt_state), (five.params, five.opt_state))


def test_resume_from_any_checkpoint_equals_an_uninterrupted_run(tmp_path, small_archive):
  config = helpers.memory_config(small_archive, num_epochs=2, steps_per_call=3,
                                 checkpoint_every_steps=5, keep_checkpoints=100,
                                 **{'augment.flip': True, 'ema_decay': 0.9})
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  saved = helpers.checkpoint_steps(tmp_path / 'straight')
  assert saved == [6, 12, 15, 17, 20, 26, 32, 34]  # call ends past a multiple of 5, epoch ends
  # As if killed after the checkpoint at step 12: later checkpoints never happened.
  shutil.copytree(tmp_path / 'straight', tmp_path / 'killed')
  for step in saved[2:]:
    shutil.rmtree(tmp_path / 'killed' / 'checkpoints' / str(step))
  resumed = loop.train_and_evaluate(config, str(tmp_path / 'killed'))
  for part in ('params', 'opt_state', 'ema'):
    jax.tree.map(np.testing.assert_array_equal, getattr(resumed, part), getattr(straight, part))


def _eight_devices_draw_from_their_own_shards_and_several_steps_equal_one_by_one():
  """Run by the test below in a process with 8 CPU devices."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from fer_flax import models
  from fer_flax.train import optim, step_fns  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  config = tiny.get_config()
  config.augment.update(flip=True, rotation=10.0)
  config.optimizer.update(name='sgd', learning_rate=0.05, momentum=0.9)
  parallel = Parallel()
  n = 8 * 10
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 48, 48, 1), np.uint8)
  labels = np.arange(n, dtype=np.int32) % 7
  feed = on_device.DeviceFeed(images, labels, 16, seed=0, steps_per_call=3, parallel=parallel)
  order = feed.permutation(0)
  stacked = feed.gather(order, 0, feed.steps_per_epoch)
  seen = []
  for shard in stacked['image'].addressable_shards:  # device d draws from examples [10d, 10d + 10)
    d = parallel.mesh.devices.tolist().index(shard.device)
    ids = np.asarray(shard.data)[..., 0, 0, 0].ravel()
    assert ((ids >= 10 * d) & (ids < 10 * d + 10)).all(), (d, ids)
    seen.extend(ids.tolist())
  assert len(seen) == len(set(seen)) == 8 * 2 * 5

  model = models.create_model(config.model)
  schedule = optim.create_learning_rate_schedule(config, RunPlan.create(config, 5, 2))
  tx = optim.create_optimizer(config, schedule)
  fresh = functools.partial(step_fns.create_train_state, model, tx, jax.random.key(0), parallel)
  rng = jax.random.key(1)
  three = next(feed.batches(0, 3))
  state = fresh()
  step = step_fns.compile_train_steps(config, parallel)
  for i in range(3):
    state, _ = step(state, jax.tree.map(lambda x, i=i: x[i:i + 1], three), rng)
  unrolled, _ = step(fresh(), three, rng)
  looped, _ = jax.jit(functools.partial(  # the accelerators' form: a scan over the steps
      step_fns.train_steps, config=config, unroll=False))(fresh(), three, rng)
  for called in (unrolled, looped):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(state.params), jax.device_get(called.params))


def test_eight_devices_draw_from_their_own_shards_and_several_steps_equal_one_by_one():
  helpers.run_on_eight_cpu_devices(
      _eight_devices_draw_from_their_own_shards_and_several_steps_equal_one_by_one)
