"""Tokenized corpora held as one flat array of token ids, length-bucketed batches, and padding.

Memory: a corpus costs its token ids (4 bytes each, int32) plus one 8-byte offset per sentence;
sentences are streamed from disk in chunks and never kept as Python strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from textae.tokenizer import encode_batch

ENCODE_CHUNK = 4096  # sentences tokenized per call: large enough for the Rust side's threads
BUCKET_BATCHES = 50  # batches per length-sorting pool: more means less padding, less randomness


@dataclass
class TokenizedCorpus:
    token_ids: np.ndarray  # (total tokens,) int32, sentences back to back
    offsets: np.ndarray  # (num_sentences + 1,) int64, sentence i is token_ids[offsets[i]:offsets[i+1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sentence(self, index: int) -> np.ndarray:
        return self.token_ids[self.offsets[index] : self.offsets[index + 1]]

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])


class _CorpusBuilder:
    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []

    def add(self, sequences: list[list[int]]) -> None:
        if sequences:
            self.chunks.append(np.fromiter((t for s in sequences for t in s), dtype=np.int32))
            self.lengths.append(np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences)))

    def build(self) -> TokenizedCorpus:
        token_ids = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int32)
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return TokenizedCorpus(token_ids, offsets)


def _chunks(sentences: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for sentence in sentences:
        chunk.append(sentence)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def tokenize_corpus(sentences: Iterable[str], tokenizer: Tokenizer, max_length: int) -> TokenizedCorpus:
    builder = _CorpusBuilder()
    for chunk in _chunks(sentences, ENCODE_CHUNK):
        builder.add(encode_batch(tokenizer, chunk, max_length))
    return builder.build()


def tokenize_with_split(
    sentences: Iterable[str], tokenizer: Tokenizer, max_length: int, valid_fraction: float, max_valid: int, seed: int
) -> tuple[TokenizedCorpus, TokenizedCorpus]:
    """Hold out a seeded random share of the stream for validation (at most max_valid sentences)."""
    rng = np.random.default_rng([seed, 1])
    train, valid = _CorpusBuilder(), _CorpusBuilder()
    valid_count = 0
    for chunk in _chunks(sentences, ENCODE_CHUNK):
        encoded = encode_batch(tokenizer, chunk, max_length)
        to_valid = rng.random(len(encoded)) < valid_fraction
        train_part, valid_part = [], []
        for sequence, held_out in zip(encoded, to_valid):
            if held_out and valid_count < max_valid:
                valid_part.append(sequence)
                valid_count += 1
            else:
                train_part.append(sequence)
        train.add(train_part)
        valid.add(valid_part)
    return train.build(), valid.build()


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Sentence indices of every batch of one epoch, a pure function of (seed, epoch).

    Shuffle, sort by length inside pools of BUCKET_BATCHES batches (so a batch holds sentences of
    similar length and little padding), then shuffle the order of the batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool_size = batch_size * BUCKET_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool_size):
        pool = order[start : start + pool_size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Deterministic length-sorted batches for evaluation."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64, <pad> after each sentence
    lengths: torch.Tensor  # (B,) int64
    targets: torch.Tensor  # (B, T + 1) int64: the sentence, <eos>, then <pad>

    @property
    def num_target_tokens(self) -> int:
        return int(self.lengths.sum()) + len(self.lengths)


def collate(corpus: TokenizedCorpus, indices: np.ndarray, pad_id: int, eos_id: int) -> Batch:
    lengths = corpus.lengths[indices]
    max_len = max(int(lengths.max()), 1)
    input_ids = np.full((len(indices), max_len), pad_id, dtype=np.int64)
    targets = np.full((len(indices), max_len + 1), pad_id, dtype=np.int64)
    for row, index in enumerate(indices):
        tokens = corpus.sentence(int(index))
        input_ids[row, : len(tokens)] = tokens
        targets[row, : len(tokens)] = tokens
        targets[row, len(tokens)] = eos_id
    return Batch(torch.from_numpy(input_ids), torch.from_numpy(lengths.astype(np.int64)), torch.from_numpy(targets))
