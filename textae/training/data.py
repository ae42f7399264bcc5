"""A run's data: its tokenizer and token store (prepared once, reused on resume), tokenized corpora,
and length-bucketed training batches.

Memory: a corpus held in memory costs its token ids (4 bytes each, int32) plus one 8-byte offset per
sentence. The training split is written to a token store on disk and read a batch at a time with
positioned reads, so only the offsets (8 bytes a sentence) stay in memory: the page cache, not the
process, holds the ids. Sentences are streamed from disk in chunks and never kept as Python strings.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from rich.console import Console
from tokenizers import Tokenizer

from textae import faults
from textae.atomic import atomic_write_text
from textae.batching import pad_batch
from textae.config import TrainConfig
from textae.conformal import sentences_needed
from textae.corpus import chunked, iter_corpus, resolve_paths
from textae.errors import TextaeError
from textae.tokenizer import encode_batch, load_tokenizer, train_tokenizer
from textae.training import distributed
from textae.training.checkpoint import TOKENIZER_FILE, TOKENS_DIR

ENCODE_CHUNK = 4096  # sentences tokenized per call: large enough for the Rust side's threads
BUCKET_BATCHES = 50  # batches per length-sorting pool: more means less padding, less randomness
TOKEN_DTYPE = np.int32
STORE_FORMAT = 1
SMALL_CORPUS_MAX_SHARE = 0.2  # the most of a small corpus held out to calibrate its export's flags
P99_SENTENCES = sentences_needed(99.0)  # 99: the fewest validation sentences a conformal p99 needs


@dataclass
class TokenizedCorpus:
    offsets: np.ndarray  # (num_sentences + 1,) int64, sentence i is tokens[offsets[i]:offsets[i+1]]
    token_ids: np.ndarray | None = None  # (total tokens,) int32 in memory, or None when token_file is set
    token_file: Path | None = None  # raw int32 ids on disk (the token store)
    _fd: int | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def sentence(self, index: int) -> np.ndarray:
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        if self.token_ids is not None:
            return self.token_ids[start:stop]
        if self._fd is None:
            self._fd = os.open(str(self.token_file), os.O_RDONLY)
        itemsize = np.dtype(TOKEN_DTYPE).itemsize
        data = os.pread(self._fd, (stop - start) * itemsize, start * itemsize)
        return np.frombuffer(data, dtype=TOKEN_DTYPE)

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class _CorpusBuilder:
    """Collects tokenized chunks in memory, or streams them to a file (then only lengths are kept)."""

    def __init__(self, sink: BinaryIO | None = None) -> None:
        self.sink = sink
        self.chunks: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []

    def add(self, sequences: list[list[int]]) -> None:
        if not sequences:
            return
        ids = np.fromiter((t for s in sequences for t in s), dtype=TOKEN_DTYPE)
        if self.sink is not None:
            self.sink.write(ids.tobytes())
        else:
            self.chunks.append(ids)
        self.lengths.append(np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences)))

    def offsets(self) -> np.ndarray:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets

    def build(self) -> TokenizedCorpus:
        token_ids = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=TOKEN_DTYPE)
        return TokenizedCorpus(self.offsets(), token_ids)


def tokenize_corpus(sentences: Iterable[str], tokenizer: Tokenizer, max_length: int) -> TokenizedCorpus:
    builder = _CorpusBuilder()
    for chunk in chunked(sentences, ENCODE_CHUNK):
        builder.add(encode_batch(tokenizer, chunk, max_length))
    return builder.build()


def small_corpus_valid_count(total: int, valid_fraction: float, min_valid: int) -> int | None:
    """How many of a small corpus's `total` sentences to hold out instead of valid_fraction of them,
    or None where the fraction stands.

    The validation split is also the export's calibration sample, and a conformal p-th percentile
    needs n >= p / (100 - p) sentences (99 for p99). 5 % of a 1,114-line log corpus is 56 lines:
    too few for the p99 flag users ask for. So a small corpus holds out min_valid sentences, but
    never more than a fifth of it, and only where that reaches the 99 a p99 needs (a smaller corpus
    keeps its 5 %, and its export says which percentiles it cannot support).
    """
    wanted = min(min_valid, int(total * SMALL_CORPUS_MAX_SHARE))
    if wanted < P99_SENTENCES or wanted <= total * valid_fraction:
        return None
    return wanted


def tokenize_with_split(
    sentences: Iterable[str],
    tokenizer: Tokenizer,
    max_length: int,
    valid_fraction: float,
    max_valid: int,
    seed: int,
    train_sink: BinaryIO | None = None,
    min_valid: int = 0,
) -> tuple[TokenizedCorpus, TokenizedCorpus]:
    """Hold out a seeded random share of the stream for validation (at most max_valid sentences;
    a small corpus holds out up to min_valid, see small_corpus_valid_count).

    With train_sink, the training ids are written there and the returned training corpus carries only
    offsets (the caller attaches the file).
    """
    rng = np.random.default_rng([seed, 1])
    train, valid = _CorpusBuilder(train_sink), _CorpusBuilder()
    stream = iter(sentences)
    # a corpus is "small" if it ends before the fraction alone would give min_valid sentences; only
    # that head is held in memory to find out, so a large corpus streams (and splits) as before
    head_size = math.ceil(min(min_valid, max_valid) / valid_fraction) if min_valid else 0
    head = list(itertools.islice(stream, head_size + 1)) if head_size else []
    if head_size and len(head) <= head_size:
        encoded = [s for chunk in chunked(head, ENCODE_CHUNK) for s in encode_batch(tokenizer, chunk, max_length)]
        count = small_corpus_valid_count(len(encoded), valid_fraction, min(min_valid, max_valid))
        if count is not None:
            held_out = np.zeros(len(encoded), dtype=bool)
            held_out[rng.permutation(len(encoded))[:count]] = True
            train.add([s for s, held in zip(encoded, held_out) if not held])
            valid.add([s for s, held in zip(encoded, held_out) if held])
            return train.build(), valid.build()
    valid_count = 0
    for chunk in chunked(itertools.chain(head, stream), ENCODE_CHUNK):
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


def token_store_key(
    corpus_files: Sequence[Path], valid_files: Sequence[Path], tokenizer_file: Path, settings: dict
) -> str:
    """Checksum of everything the stored token ids depend on: corpus bytes, tokenizer, split settings."""
    digest = hashlib.sha256(json.dumps({"format": STORE_FORMAT, **settings}, sort_keys=True).encode())
    for role, paths in (("corpus", corpus_files), ("valid", valid_files), ("tokenizer", [tokenizer_file])):
        for path in paths:
            digest.update(f"{role}:{Path(path).name}:".encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def build_token_store(
    store_dir: Path,
    train_sentences: Iterable[str],
    tokenizer: Tokenizer,
    max_length: int,
    *,
    valid_sentences: Iterable[str] | None = None,
    valid_fraction: float = 0.05,
    max_valid: int = 2000,
    min_valid: int = 0,
    seed: int = 0,
) -> None:
    """Tokenize once into store_dir (built beside it, then renamed: a killed build leaves no store)."""
    building = store_dir.with_name(store_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    with open(building / "train_tokens.bin", "wb") as sink:
        if valid_sentences is None:
            train, valid = tokenize_with_split(
                train_sentences, tokenizer, max_length, valid_fraction, max_valid, seed, sink, min_valid
            )
        else:
            builder = _CorpusBuilder(sink)
            for chunk in chunked(train_sentences, ENCODE_CHUNK):
                builder.add(encode_batch(tokenizer, chunk, max_length))
            train = TokenizedCorpus(builder.offsets())
            valid = tokenize_corpus(valid_sentences, tokenizer, max_length)
        sink.flush()
        os.fsync(sink.fileno())
    faults.reached("token_store")
    np.save(building / "train_offsets.npy", train.offsets)
    np.save(building / "valid_offsets.npy", valid.offsets)
    np.save(building / "valid_tokens.npy", valid.token_ids)
    (building / "meta.json").write_text(json.dumps({"format": STORE_FORMAT, "train_sentences": len(train)}))
    os.replace(building, store_dir)


def open_token_store(store_dir: Path) -> tuple[TokenizedCorpus, TokenizedCorpus]:
    train = TokenizedCorpus(np.load(store_dir / "train_offsets.npy"), token_file=store_dir / "train_tokens.bin")
    valid = TokenizedCorpus(np.load(store_dir / "valid_offsets.npy"), np.load(store_dir / "valid_tokens.npy"))
    return train, valid


def prepare_data(
    config: TrainConfig, run_dir: Path, resume: bool, console: Console, workers: distributed.Workers
) -> tuple[Tokenizer, TokenizedCorpus, TokenizedCorpus]:
    """Tokenizer and token store are made once, by rank 0, and reused on resume; every rank opens them."""
    paths = resolve_paths(config.corpus)
    valid_paths = resolve_paths([config.valid]) if config.valid else []
    tokenizer_path = run_dir / TOKENIZER_FILE
    where = ", ".join(map(str, paths))

    def make_tokenizer() -> None:
        if resume and tokenizer_path.is_file():
            return  # written atomically, so complete: the one this run has used from the start
        if config.tokenizer:
            load_tokenizer(Path(config.tokenizer))
            atomic_write_text(tokenizer_path, Path(config.tokenizer).read_text(encoding="utf-8"))
            return
        with console.status("training the tokenizer"):
            tokenizer = train_tokenizer(iter_corpus(paths), config.vocab_size)
        faults.reached("tokenizer")
        atomic_write_text(tokenizer_path, tokenizer.to_str(pretty=True))

    workers.on_main(make_tokenizer)
    tokenizer = load_tokenizer(tokenizer_path)
    settings = {"max_length": config.max_length, "valid_fraction": config.valid_fraction,
                "max_valid": config.max_valid_sentences, "min_valid": config.min_valid_sentences, "seed": config.seed}  # fmt: skip
    store_dir = run_dir / TOKENS_DIR / token_store_key(paths, valid_paths, tokenizer_path, settings)

    def make_store() -> None:
        if store_dir.is_dir():
            console.print(f"reusing the token store {store_dir}")
            return
        with console.status("tokenizing the corpus into the token store"):
            build_token_store(
                store_dir, iter_corpus(paths), tokenizer, config.max_length,
                valid_sentences=iter_corpus(valid_paths) if valid_paths else None,
                valid_fraction=config.valid_fraction, max_valid=config.max_valid_sentences,
                min_valid=config.min_valid_sentences, seed=config.seed,
            )  # fmt: skip

    workers.on_main(make_store)
    try:
        train_data, valid_data = open_token_store(store_dir)
    except (OSError, ValueError, EOFError) as exc:  # a store damaged by hand: the kill-safe build never leaves one
        raise TextaeError(
            f"{store_dir}: damaged token store ({type(exc).__name__}); delete the folder to rebuild it"
        ) from None
    if len(train_data) + len(valid_data) == 0:
        raise TextaeError(f"{where}: no sentences (the corpus is empty or holds only empty lines)")
    if len(valid_data) == 0:
        # a corpus too small for the fraction still gets one validation sentence
        train_data, valid_data = _split_last(train_data)
    if len(train_data) < config.batch_size:
        raise TextaeError(
            f"{where}: only {len(train_data)} training sentences ({len(valid_data)} more held out for validation), "
            f"fewer than one batch of {config.batch_size}; lower --batch-size or add text"
        )
    return tokenizer, train_data, valid_data


def _split_last(data: TokenizedCorpus) -> tuple[TokenizedCorpus, TokenizedCorpus]:
    last = np.array(data.sentence(len(data) - 1))
    valid = TokenizedCorpus(np.array([0, len(last)], dtype=np.int64), last)
    if len(data) == 1:
        return data, valid
    cut = int(data.offsets[-2])
    tokens = data.token_ids[:cut] if data.token_ids is not None else None
    return TokenizedCorpus(data.offsets[:-1], tokens, data.token_file), valid


def epoch_batch_groups(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_size: int = 1
) -> list[list[np.ndarray]]:
    """Sentence indices of every batch of one epoch, in groups of group_size; a pure function of its inputs.

    Shuffle, sort by length inside pools of BUCKET_BATCHES batches (so a batch holds sentences of
    similar length and little padding), cut each pool into batches, group neighbouring batches, then
    shuffle the groups. With one group member per process, the processes that step together get
    batches of similar length, so no process waits long for another at the gradient all-reduce.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool_size = batch_size * BUCKET_BATCHES
    groups: list[list[np.ndarray]] = []
    for start in range(0, len(order), pool_size):
        pool = order[start : start + pool_size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        groups.extend(batches[i : i + group_size] for i in range(0, len(batches), group_size))
    rng.shuffle(groups)  # type: ignore[arg-type]
    return groups


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch for a single process."""
    return [group[0] for group in epoch_batch_groups(lengths, batch_size, seed, epoch)]


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64, <pad> after each sentence
    lengths: torch.Tensor  # (B,) int64, stays on the CPU (packing wants it there)
    targets: torch.Tensor  # (B, T + 1) int64: the sentence, <eos>, then <pad>
    pad_id: int  # the <pad> id of input_ids and targets (the model config's)
    view_ids: torch.Tensor | None = None  # (B, T'') a second encoder view of each sentence (the contrastive term)
    view_lengths: torch.Tensor | None = None  # (B,) its lengths, on the CPU like lengths

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        move = lambda tensor: tensor.pin_memory().to(device, non_blocking=True)  # noqa: E731
        view_ids = move(self.view_ids) if self.view_ids is not None else None
        return Batch(move(self.input_ids), self.lengths, move(self.targets), self.pad_id, view_ids, self.view_lengths)

    @property
    def num_target_tokens(self) -> int:
        return int((self.targets != self.pad_id).sum())


def add_noise(tokens: np.ndarray, noise: dict[str, float], mask_id: int, rng: np.random.Generator) -> np.ndarray:
    """Corrupt one sentence's encoder input (denoising autoencoder): delete, swap neighbours, mask."""
    if noise.get("delete") and len(tokens) > 1:
        kept = tokens[rng.random(len(tokens)) >= noise["delete"]]
        tokens = kept if len(kept) else tokens[rng.integers(len(tokens))][None]
    if noise.get("swap") and len(tokens) > 1:
        tokens = tokens.copy()
        for position in np.flatnonzero(rng.random(len(tokens) - 1) < noise["swap"]):
            tokens[position], tokens[position + 1] = tokens[position + 1], tokens[position]
    if noise.get("mask"):
        tokens = np.where(rng.random(len(tokens)) < noise["mask"], mask_id, tokens)
    return tokens


def collate(
    corpus: TokenizedCorpus,
    indices: np.ndarray,
    pad_id: int,
    eos_id: int,
    noise: dict[str, float] | None = None,
    mask_id: int = 3,
    rng: np.random.Generator | None = None,
    second_view: dict[str, float] | None = None,
) -> Batch:
    """Pad a batch; with noise, the encoder reads a corrupted copy and the targets stay clean.

    second_view (not None): also a second encoder view, the clean sentences corrupted by it
    independently of the first (drawn after it from rng); {} repeats the first view's input."""
    sentences = [corpus.sentence(int(index)) for index in indices]
    inputs = [add_noise(s, noise, mask_id, rng) for s in sentences] if noise and rng is not None else sentences
    input_ids, lengths = pad_batch(inputs, pad_id)
    targets, _ = pad_batch([np.append(tokens, eos_id) for tokens in sentences], pad_id)
    batch = Batch(torch.from_numpy(input_ids), torch.from_numpy(lengths), torch.from_numpy(targets), pad_id)
    if second_view is not None:
        if second_view and rng is not None:
            view_ids, view_lengths = pad_batch([add_noise(s, second_view, mask_id, rng) for s in sentences], pad_id)
            batch.view_ids, batch.view_lengths = torch.from_numpy(view_ids), torch.from_numpy(view_lengths)
        else:
            batch.view_ids, batch.view_lengths = batch.input_ids, batch.lengths
    return batch
