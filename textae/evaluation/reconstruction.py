"""How well a model reproduces held-out sentences: token accuracy, exact match and chrF, by length.

Lengths and token accuracy count the model's own subword tokens of the whole sentence, so a
sentence longer than the model's max_length cannot be reproduced exactly and counts as such.
Percentages (0-100), as sacrebleu reports chrF. sacrebleu comes from the `eval` extra.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textae.batching import length_sorted_batches
from textae.evaluation.readers import read_text_file
from textae.extras import import_optional
from textae.runtime.model import TextAE
from textae.tokenizer import decode_batch, encode_batch

# Upper ends (inclusive, in model tokens) of the length buckets of the reconstruction report.
LENGTH_BUCKETS = (5, 10, 20, 40)
RECONSTRUCT_BATCH = 64
UNTRUNCATED = 1 << 30  # encode_batch cap that never cuts: references keep every token


@dataclass
class LengthBucket:
    tokens: str  # reference length range in model tokens, e.g. "6-10" or "41+"
    sentences: int
    token_accuracy: float  # % of reference token positions reproduced (length mismatch counts as errors)
    exact_match: float  # % of sentences reproduced token for token
    chrf: float  # corpus chrF (sacrebleu), 0-100


@dataclass
class ReconstructionResult:
    path: str
    sentences: int
    token_accuracy: float
    exact_match: float
    chrf: float
    buckets: list[LengthBucket]


def evaluate_reconstruction(
    model: TextAE, path: Path, buckets: Sequence[int] = LENGTH_BUCKETS, beam_size: int = 1
) -> ReconstructionResult:
    """Encode and decode (greedily, or with a beam of beam_size) every sentence of path; compare
    with the input, per length bucket."""
    import_optional("sacrebleu", "chrF")
    reference_ids, hypothesis_ids, references, hypotheses = reconstruct_ids(model, read_text_file(path), beam_size)
    return summarize_reconstruction(str(path), reference_ids, hypothesis_ids, references, hypotheses, buckets=buckets)


def reconstruct_ids(
    model: TextAE, sentences: Sequence[str], beam_size: int = 1
) -> tuple[list[list[int]], list[list[int]], list[str], list[str]]:
    """(reference ids, reconstructed ids, reference texts, reconstructed texts), in input order."""
    # NFC + strip: what the tokenizer and decoder produce, so a round trip can compare equal
    references = [unicodedata.normalize("NFC", sentence.strip()) for sentence in sentences]
    reference_ids = encode_batch(model.tokenizer, references, UNTRUNCATED)
    hypothesis_ids: list[list[int]] = [[] for _ in references]
    for rows in length_sorted_batches([len(ids) for ids in reference_ids], RECONSTRUCT_BATCH):
        vectors = model.embed([references[row] for row in rows], batch_size=RECONSTRUCT_BATCH, raw=True)
        for row, ids in zip(rows, model.decode_ids(vectors, beam_size=beam_size)):
            hypothesis_ids[row] = ids
    return reference_ids, hypothesis_ids, references, decode_batch(model.tokenizer, hypothesis_ids)


def summarize_reconstruction(
    path: str,
    reference_ids: list[list[int]],
    hypothesis_ids: list[list[int]],
    references: list[str],
    hypotheses: list[str],
    *,
    buckets: Sequence[int] = LENGTH_BUCKETS,
) -> ReconstructionResult:
    """Token accuracy, exact match and chrF overall and per length bucket (upper ends in tokens)."""
    chrf_metric = import_optional("sacrebleu.metrics", "chrF").CHRF()
    matches = np.array([sum(r == h for r, h in zip(ref, hyp)) for ref, hyp in zip(reference_ids, hypothesis_ids)])
    positions = np.array([max(len(ref), len(hyp), 1) for ref, hyp in zip(reference_ids, hypothesis_ids)])
    exact = np.array([ref == hyp for ref, hyp in zip(reference_ids, hypothesis_ids)])
    lengths = np.array([len(ref) for ref in reference_ids])

    def summary(rows: np.ndarray, name: str) -> LengthBucket:
        chrf = chrf_metric.corpus_score([hypotheses[i] for i in rows], [[references[i] for i in rows]]).score
        return LengthBucket(
            name, len(rows), float(100 * matches[rows].sum() / positions[rows].sum()), float(100 * exact[rows].mean()), float(chrf)
        )

    results = []
    lower = 0
    for upper in [*buckets, None]:
        inside = (lengths > lower) & (lengths <= upper if upper is not None else True)
        if lower == 0:
            inside |= lengths == 0  # an empty reference belongs to the shortest bucket
        rows = np.flatnonzero(inside)
        if len(rows):
            results.append(summary(rows, f"{lower + 1}-{upper}" if upper is not None else f"{lower + 1}+"))
        lower = upper if upper is not None else lower
    overall = summary(np.arange(len(references)), "all")
    return ReconstructionResult(path, len(references), overall.token_accuracy, overall.exact_match, overall.chrf, results)
