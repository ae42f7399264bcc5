"""textae.batching: the numpy helpers both sides batch with."""

from __future__ import annotations

import numpy as np

from textae.batching import cut_at_eos, length_sorted_batches, pad_batch, unit_rows


def test_pad_batch_pads_after_each_row_and_keeps_one_column_for_empty_rows() -> None:
    input_ids, lengths = pad_batch([[5, 6, 7], [], [8]], pad_id=9)
    assert input_ids.dtype == lengths.dtype == np.int64
    assert input_ids.tolist() == [[5, 6, 7], [9, 9, 9], [8, 9, 9]] and lengths.tolist() == [3, 0, 1]
    empty_ids, empty_lengths = pad_batch([[], []], pad_id=0)
    assert empty_ids.shape == (2, 1) and empty_lengths.tolist() == [0, 0]
    arrays_ids, _ = pad_batch([np.array([1, 2], dtype=np.int32)], pad_id=0)
    assert arrays_ids.tolist() == [[1, 2]] and arrays_ids.dtype == np.int64


def test_length_sorted_batches_cover_every_row_once_shortest_first() -> None:
    lengths = [5, 1, 3, 1, 4]
    batches = length_sorted_batches(lengths, batch_size=2)
    assert [batch.tolist() for batch in batches] == [[1, 3], [2, 4], [0]]  # stable: equal lengths keep their order
    assert length_sorted_batches([], batch_size=4) == []


def test_cut_at_eos_drops_eos_and_what_follows() -> None:
    assert cut_at_eos(np.array([4, 5, 2, 0, 0]), eos_id=2) == [4, 5]
    assert cut_at_eos([4, 5], eos_id=2) == [4, 5]
    assert cut_at_eos([2, 4], eos_id=2) == []
    assert all(type(token) is int for token in cut_at_eos(np.array([4, 5], dtype=np.int64), eos_id=2))


def test_unit_rows_have_length_one_and_zero_rows_stay_zero() -> None:
    rows = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert rows.dtype == np.float32 and rows.flags.c_contiguous
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])
