"""Beam search over a one-step decoder, on step functions whose best sentence is known exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from textae.errors import TextaeError
from textae.runtime.beam import MAX_BEAM_SIZE, beam_search, check_beam_size, log_softmax

PAD, BOS, EOS = 0, 1, 2


def markov_step(table: np.ndarray):
    """A decoder whose next-token distribution depends only on the last token (kept as the state)."""

    def step(input_ids: np.ndarray, vectors: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.log(table[input_ids]).astype(np.float32), input_ids.astype(np.float32)[:, None]

    return step


def search(step, rows: int, beam_size: int, max_length: int, length_penalty: float = 0.0) -> list[list[int]]:
    vectors, state = np.zeros((rows, 3), dtype=np.float32), np.full((rows, 1), BOS, dtype=np.float32)
    return beam_search(step, vectors, state, bos_id=BOS, eos_id=EOS, pad_id=PAD, beam_size=beam_size,
                       max_length=max_length, length_penalty=length_penalty)  # fmt: skip


def greedy_trap() -> np.ndarray:
    """After <bos>, A (0.55) beats B (0.45); but A's best ending has 0.4 and B's 0.95, so the most
    probable sentence is "B" (0.43) while greedy decoding commits to A and says "A" (0.22)."""
    a, b = 3, 4
    table = np.full((5, 5), 1e-6)
    table[BOS, [a, b]] = [0.55, 0.45]
    table[a, [EOS, a, b]] = [0.4, 0.3, 0.3]
    table[b, [EOS, a]] = [0.95, 0.05]
    table[[PAD, EOS], EOS] = 1.0
    return table / table.sum(axis=1, keepdims=True)


def test_a_beam_finds_the_sentence_greedy_decoding_misses() -> None:
    step = markov_step(greedy_trap())
    assert search(step, rows=2, beam_size=1, max_length=5) == [[3], [3]]
    assert search(step, rows=2, beam_size=2, max_length=5) == [[4], [4]]


@pytest.mark.parametrize("seed", range(6))
def test_a_beam_as_wide_as_every_prefix_finds_the_most_probable_sentence(seed: int) -> None:
    # 5 tokens, 3 steps: at most 25 live prefixes, so a beam of 25 is an exhaustive search
    table = np.random.default_rng(seed).dirichlet(np.full(5, 0.5), size=5)
    log_table = np.log(table)

    def log_prob(tokens: tuple[int, ...]) -> float:
        previous = (BOS, *tokens[:-1])
        return float(sum(log_table[p, t] for p, t in zip(previous, tokens)))

    # every sentence the search can return: ended by its one <eos>, or cut at the length limit
    sentences = [s for k in (1, 2, 3) for s in itertools.product(range(5), repeat=k) if EOS not in s[:-1] and (k == 3 or s[-1] == EOS)]
    best = max(sentences, key=log_prob)
    want = list(best[:-1]) if best[-1] == EOS else list(best)
    assert search(markov_step(table), rows=1, beam_size=25, max_length=3) == [want]


def test_a_beam_of_one_is_greedy_decoding() -> None:
    rng = np.random.default_rng(7)
    table = rng.dirichlet(np.full(6, 0.3), size=6)
    step = markov_step(table)
    last = np.full(4, BOS)
    want: list[list[int]] = [[] for _ in range(4)]
    done = np.zeros(4, dtype=bool)
    for _ in range(10):  # the runtime's greedy step loop, written out
        last = np.where(done, PAD, np.log(table[last]).argmax(axis=1))
        for row in np.flatnonzero(~done & (last != EOS)):
            want[row].append(int(last[row]))
        done |= last == EOS
    assert search(step, rows=4, beam_size=1, max_length=10) == want


def test_length_penalty_and_the_length_limit() -> None:
    # after <bos>: <eos> at once (0.5) or A, which then repeats (0.9) or ends (0.1)
    table = np.full((5, 5), 1e-9)
    table[BOS, [EOS, 3]] = [0.5, 0.5]
    table[3, [3, EOS]] = [0.9, 0.1]
    table[[PAD, EOS], EOS] = 1.0
    table /= table.sum(axis=1, keepdims=True)
    step = markov_step(table)
    # summed log-probabilities: the empty sentence (0.5) beats A A A A, cut at the limit (0.36)
    assert search(step, rows=1, beam_size=2, max_length=4) == [[]]
    # per-token means: log(0.36) / 4 beats log(0.5) / 1
    assert search(step, rows=1, beam_size=2, max_length=4, length_penalty=1.0) == [[3, 3, 3, 3]]
    assert search(step, rows=0, beam_size=2, max_length=4) == []


def test_log_softmax_is_stable_for_huge_logits() -> None:
    out = log_softmax(np.array([[1e4, 0.0, -1e4]], dtype=np.float32))
    assert np.isfinite(out[0, :2]).all() and out[0, 0] == 0.0
    np.testing.assert_allclose(np.exp(log_softmax(np.array([[1.0, 2.0, 3.0]]))).sum(), 1.0)


@pytest.mark.parametrize("bad", [0, -1, MAX_BEAM_SIZE + 1, True, 2.0, "4", None])
def test_a_beam_size_out_of_range_is_a_clear_error(bad: object) -> None:
    with pytest.raises(TextaeError, match=f"beam_size must be a whole number from 1 to {MAX_BEAM_SIZE}"):
        check_beam_size(bad)  # type: ignore[arg-type]
