"""Padding to whole batches."""

import numpy as np

from fer_flax.core.padding import pad_rows


def test_rows_are_padded_with_zeros_to_a_whole_batch():
  faces = np.full((5, 2, 2), 7, np.uint8)
  padded = pad_rows(faces, 4)
  assert padded.shape == (8, 2, 2) and padded.dtype == np.uint8
  np.testing.assert_array_equal(padded[:5], faces)
  assert not padded[5:].any()
  whole = faces[:4]
  assert pad_rows(whole, 4) is whole  # nothing to add
  assert pad_rows(faces[:0], 4).shape == (4, 2, 2)  # an empty request still makes one batch
