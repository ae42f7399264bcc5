"""Beam search over the decoder's one-step graph (torch-free).

Greedy decoding keeps one hypothesis per sentence and commits to its best token at every step; a
beam keeps the `beam_size` best prefixes by summed log-probability and so can recover when the
best first token leads to a worse sentence. It is written here rather than taken from a library
because it drives an onnxruntime graph (the export's `decoder_step`) with numpy arrays: the
generation helpers of transformers or fairseq need torch and their own model classes.

A finished hypothesis (one that produced <eos>) stays in the beam at its score, fed <pad> at no
cost, so it competes with the unfinished ones until the end; the search stops when every kept
hypothesis has finished or after max_length tokens. The winner of each row is the best final
score divided by (tokens generated) ** length_penalty: 0 compares summed log-probabilities as they
are (what reconstruction wants: the most probable sentence), 1 compares per-token means.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from textae.batching import cut_at_eos
from textae.errors import TextaeError

# (input_ids (N,), sentence_embedding (N, Z), state (N, ...)) -> (logits (N, V), next_state (N, ...))
StepFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
MAX_BEAM_SIZE = 64  # rows x beam is one onnxruntime batch: a bound keeps a request's memory bounded


def check_beam_size(beam_size: int) -> None:
    """A clear error for a beam the search cannot run (bool is not an int here)."""
    if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)) or not 1 <= beam_size <= MAX_BEAM_SIZE:
        raise TextaeError(f"beam_size must be a whole number from 1 to {MAX_BEAM_SIZE}, got {beam_size!r}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float64, so sums over 64 steps lose nothing to rounding."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def best_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest scores, best first (ties: the lower index first, as
    argmax breaks them, so a beam of 1 is exactly greedy decoding)."""
    if k == 1:
        return scores.argmax(axis=1)[:, None]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def beam_search(
    step: StepFunction,
    vectors: np.ndarray,
    state: np.ndarray,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    beam_size: int,
    max_length: int,
    length_penalty: float = 0.0,
) -> list[list[int]]:
    """The best token ids of each row of vectors, up to and without <eos>.

    state is the decoder's initial state for those rows (the export's `decoder_init`); step runs
    one decoder step for a batch of rows x beam_size hypotheses.
    """
    check_beam_size(beam_size)
    rows, beams = len(vectors), beam_size
    if rows == 0:
        return []
    vectors = np.repeat(vectors, beams, axis=0)
    state = np.repeat(state, beams, axis=0)
    scores = np.full((rows, beams), -np.inf)
    scores[:, 0] = 0.0  # one live hypothesis per row at the start: the others are copies of it
    finished = np.zeros((rows, beams), dtype=bool)
    generated = np.zeros((rows, beams), dtype=np.int64)  # tokens each hypothesis produced, <eos> included
    tokens = np.zeros((rows, beams, 0), dtype=np.int64)
    input_ids = np.full(rows * beams, bos_id, dtype=np.int64)
    first_row = (np.arange(rows) * beams)[:, None]
    for _ in range(max_length):
        logits, state = step(input_ids, vectors, state)
        log_probs = log_softmax(logits).reshape(rows, beams, -1)
        vocab = log_probs.shape[2]
        log_probs[finished] = -np.inf
        log_probs[finished, pad_id] = 0.0  # a finished hypothesis carries its score forward unchanged
        candidates = (scores[:, :, None] + log_probs).reshape(rows, beams * vocab)
        chosen = best_k(candidates, beams)
        origin, token = np.divmod(chosen, vocab)
        scores = np.take_along_axis(candidates, chosen, axis=1)
        state = state[(first_row + origin).reshape(-1)]
        was_finished = np.take_along_axis(finished, origin, axis=1)
        generated = np.take_along_axis(generated, origin, axis=1) + ~was_finished
        tokens = np.concatenate([np.take_along_axis(tokens, origin[:, :, None], axis=1), token[:, :, None]], axis=2)
        finished = was_finished | (token == eos_id)
        input_ids = token.reshape(-1).astype(np.int64)
        if finished.all():
            break
    final = scores / np.maximum(generated, 1) ** length_penalty
    winners = final.argmax(axis=1)
    return [cut_at_eos(tokens[row, winners[row]], eos_id) for row in range(rows)]
