"""Padding to whole batches: compiled programs take fixed shapes, so the last batch of a split or
of a request is filled with zero rows (masked or dropped afterwards)."""

from __future__ import annotations

import numpy as np


def pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
  """`array` with zero rows appended up to a multiple of `multiple` rows (at least one batch)."""
  extra = -len(array) % multiple if len(array) else multiple
  if not extra:
    return array
  return np.concatenate([array, np.zeros((extra, *array.shape[1:]), array.dtype)])
