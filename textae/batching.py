"""Batches of token ids and their vectors, in numpy (torch-free; both sides use these).

The training side pads with the same function as the runtime and converts with torch.from_numpy,
so a batch the export checks against torch is built exactly as the runtime builds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_BATCH_SIZE = 64  # sentences per onnxruntime call, the runtime's and the CLI's default


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int, *, min_width: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids (B, T) int64 with <pad> after each row, lengths (B,) int64).

    T is the longest row, but at least min_width: at least 1, since a batch of empty sentences still
    feeds the encoder one <pad> step, as training does; more when a caller keeps few distinct shapes.
    """
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    input_ids = np.full((len(token_ids), max(1, min_width, int(lengths.max(initial=0)))), pad_id, dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
    return input_ids, lengths


def length_sorted_batches(lengths: ArrayLike, batch_size: int) -> list[np.ndarray]:
    """Row indices cut into batches of similar length (stable sort, so deterministic): little
    compute goes to padding, and a greedy Loop stops soon after its longest row is done."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def cut_at_eos(token_ids: Sequence[int] | np.ndarray, eos_id: int) -> list[int]:
    """A decoded row up to, without, its first <eos> (the whole row when it has none)."""
    ids = [int(token) for token in token_ids]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def unit_rows(vectors: ArrayLike) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows stay zero), as contiguous float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, np.finfo(np.float32).tiny))
