"""tf.data input: per-process shards, exact resume, and evaluation that counts each example once."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fer_flax.core.errors import UserError
from fer_flax.data import tf_input


@pytest.fixture(scope='module')
def builder(tfds_dir):
  return tfds.builder('fer2013', data_dir=str(tfds_dir))


def _keys(batch):
  return [b.tobytes() for b in batch['image']]


@pytest.mark.parametrize('process_count,batch_size', [(1, 16), (2, 16), (3, 12)])
def test_eval_sees_every_example_exactly_once(builder, process_count, batch_size):
  seen = collections.Counter()
  num_batches = set()
  for index in range(process_count):
    ds, n = tf_input.eval_data(builder, 'public_test', batch_size, index, process_count)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == n
    num_batches.add(n)
    for batch in batches:
      assert batch['image'].shape[0] == batch_size // process_count
      seen.update(k for k, m in zip(_keys(batch), batch['mask'], strict=True) if m)
  everything = [ex['image'].tobytes()
                for ex in tfds.as_numpy(builder.as_dataset(split='public_test'))]
  assert len(num_batches) == 1  # every process runs the same number of eval steps
  assert seen == collections.Counter(everything)


def test_train_batches_are_full_disjoint_across_processes_and_seeded(builder):
  shards = [tf_input.TrainData(builder, 'train', 16, 0, i, 2) for i in range(2)]
  epochs = [list(s.epoch(0).as_numpy_iterator()) for s in shards]
  assert all(b['image'].shape == (8, 48, 48, 1) for e in epochs for b in e)
  assert len(epochs[0]) == shards[0].steps_per_epoch == 70 // 8
  keys = [set(k for b in e for k in _keys(b)) for e in epochs]
  assert not keys[0] & keys[1]
  again = list(tf_input.TrainData(builder, 'train', 16, 0, 0, 2).epoch(0).as_numpy_iterator())
  assert [_keys(b) for b in again] == [_keys(b) for b in epochs[0]]
  assert [_keys(b) for b in shards[0].epoch(1).as_numpy_iterator()] != [_keys(b) for b in again]


def test_iterate_resumes_at_any_step(builder):
  data = tf_input.TrainData(builder, 'train', 16, 3, 0, 1)
  spe = data.steps_per_epoch
  it = data.iterate(0)
  straight = [next(it) for _ in range(2 * spe + 3)]
  resumed = data.iterate(spe + 2)
  for expected in straight[spe + 2:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], expected['image'])
    np.testing.assert_array_equal(got['label'], expected['label'])


def test_unknown_split_lists_the_available_ones(builder):
  with pytest.raises(UserError, match=r"split 'private_test' is not in .* \(it has public_test, "
                                      r'train\)'):
    tf_input.eval_data(builder, 'private_test', 16, 0, 1)


def test_batch_size_not_divisible_by_processes(builder):
  with pytest.raises(UserError, match=r'config.batch_size=15 is not divisible by the 2 processes'):
    tf_input.TrainData(builder, 'train', 15, 0, 0, 2)
