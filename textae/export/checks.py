"""Parity checks of the written fp32 graphs against the torch model; any miss raises, naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from textae.batching import cut_at_eos, pad_batch
from textae.config import ModelConfig
from textae.errors import TextaeError
from textae.runtime.model import TextAE
from textae.training.model import Autoencoder

PARITY_TOLERANCE = 1e-4  # max abs difference allowed between torch and onnxruntime (embeddings, scores)
PARITY_SENTENCES = 16  # real sentences also checked against torch


def _parity_batch(config: ModelConfig) -> tuple[Tensor, Tensor]:
    """Mixed lengths (an empty and a one-token sentence included) padded to a length the export
    example did not have, and a batch size it did not have either."""
    width = min(11, config.max_length)
    lengths = torch.tensor([width, 1, 0, min(4, width), width, min(7, width), 2 if width > 1 else 1])
    generator = torch.Generator().manual_seed(0)
    first_plain = max(config.pad_id, config.bos_id, config.eos_id, config.unk_id) + 1
    input_ids = torch.randint(first_plain, config.vocab_size, (len(lengths), width), generator=generator)
    steps = torch.arange(width).unsqueeze(0)
    input_ids = input_ids.masked_fill(steps >= lengths.unsqueeze(1), config.pad_id)
    return input_ids, lengths


def check_parity(model: Autoencoder, folder: Path, sentences: list[str]) -> dict[str, Any]:
    """Every fp32 graph against the torch model, on a synthetic batch (odd shape, empty and one-token
    rows) and on real sentences (where a trained model ends rows at different steps); raise naming
    the check and the size of the miss."""
    runtime = TextAE.load(folder, precision="fp32", num_threads=1)
    token_ids = runtime.tokenize(sentences[:PARITY_SENTENCES])
    real_ids, real_lengths = pad_batch(token_ids, model.config.pad_id)
    real = (torch.from_numpy(real_ids), torch.from_numpy(real_lengths))
    worst = {"embedding_max_abs_diff": 0.0, "features_max_abs_diff": 0.0, "score_max_abs_diff": 0.0}
    for input_ids, lengths in (_parity_batch(model.config), real):
        diffs = _check_batch(model, runtime, input_ids, lengths)
        worst = {name: max(worst[name], diffs[name]) for name in worst}
    return {"batches": [list(_parity_batch(model.config)[0].shape), list(real[0].shape)], **worst, "tolerance": PARITY_TOLERANCE}


def _check_batch(model: Autoencoder, runtime: TextAE, input_ids: Tensor, lengths: Tensor) -> dict[str, float]:
    batch = f"a {input_ids.size(0)}x{input_ids.size(1)} batch"
    feeds = {"input_ids": input_ids.numpy(), "lengths": lengths.numpy()}
    max_length = model.config.max_length + 1
    with torch.no_grad():
        torch_embedding, torch_features = model.encode_with_features(input_ids, lengths)
        torch_scores = model.score(input_ids, lengths)
        torch_ids = model.greedy_decode(torch_embedding, max_length).numpy()
    onnx_embedding, onnx_features = runtime.run_graph("encoder", **feeds)
    diffs = {
        "embedding_max_abs_diff": _max_abs_diff(onnx_embedding, torch_embedding.numpy(), "encoder", batch),
        "features_max_abs_diff": _max_abs_diff(onnx_features, torch_features.numpy(), "encoder features", batch),
        "score_max_abs_diff": _max_abs_diff(runtime.run_graph("decoder_score", **feeds)[0], torch_scores.numpy(), "decoder_score", batch),
    }
    loop_feeds = {"sentence_embedding": torch_embedding.numpy(), "max_length": np.array(max_length, dtype=np.int64)}
    _same_ids(runtime.run_graph("decoder_greedy", **loop_feeds)[0], torch_ids, "decoder_greedy (Loop)", batch)
    torch_rows = [cut_at_eos(row, model.config.eos_id) for row in torch_ids]
    step_rows = runtime.greedy_ids(torch_embedding.numpy(), max_length, method="step")
    if step_rows != torch_rows:
        differing = sum(a != b for a, b in zip(step_rows, torch_rows))
        raise TextaeError(f"export check failed: decoder_step ids differ from torch in {differing} of {len(torch_rows)} rows of {batch}")
    return diffs


def _max_abs_diff(got: np.ndarray, want: np.ndarray, graph: str, batch: str) -> float:
    if got.shape != want.shape:
        raise TextaeError(f"export check failed: {graph} returns shape {got.shape} on {batch}, torch {want.shape}")
    diff = float(np.abs(got - want).max())
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        raise TextaeError(f"export check failed: {graph} differs from torch by {diff:.3g} (max abs; tolerance {PARITY_TOLERANCE:g}) on {batch}")
    return diff


def _same_ids(got: np.ndarray, want: np.ndarray, graph: str, batch: str) -> None:
    if got.shape != want.shape:
        raise TextaeError(f"export check failed: {graph} decoded {got.shape[1]} steps on {batch}, torch {want.shape[1]}")
    rows = np.flatnonzero((got != want).any(axis=1))
    if len(rows):
        step = int(np.flatnonzero(got[rows[0]] != want[rows[0]])[0])
        raise TextaeError(
            f"export check failed: {graph} ids differ from torch in {len(rows)} of {len(got)} rows of {batch} "
            f"(first: row {rows[0]}, step {step})"
        )

