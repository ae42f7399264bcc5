"""Would `features` gain from reading the bottom of the encoder? Measured on an existing export.

    python benchmarks/bench_token_mean.py --data ../shared/data --export RUN/textae-export --train RUN/train.txt
        [--only "token mean" "features + token mean"] [--json results.json]

Issue 22 asks whether pooling that also reads the token embeddings (the bottom of the encoder, as
WhiteningBERT found for transformers) makes better vectors than the top layer's states alone. The
encoder's token embedding table is in its ONNX graph, so the candidate vectors can be computed from
an export without retraining or changing the graph: for each sentence (tokenized as `embed` does)
the mean of its tokens' rows of that table. Each candidate is measured as bench_quality.py measures
a method (STS-B dev, SICK trial, the probes), raw and whitened, the whitening fitted with the
runtime's `fit_whitening` on up to 20,000 of the run's training sentences (--train: bench_quality's
WORK/train.txt), as the export fits its own.

Candidates (--only picks some; each costs two evaluations, a few minutes on 2 cores):
  - "token mean": the masked mean of the token embeddings alone (E wide);
  - "token max", "token mean, SIF" (weights a / (a + p(token)), a = 1e-3, p from the sample;
    Arora et al. 2017), "token mean + max, balanced", "token mean + max + min, balanced";
  - "features + token mean", "features + token mean, balanced", "features + token mean + max,
    balanced": the export's features with the token pools appended ("balanced": each block
    whitened on its own and scaled to unit mean squared norm per block, so a wide block does not
    outweigh a narrow one in a cosine);
  - "vector + token mean + max, balanced": the sentence vector beside the token pools, and with
    the min as well;
  - "token power means (1, 3, max, min), balanced": Rücklé et al. 2018's concatenated power means
    (p = 1, 3, +inf, -inf; the p = 3 mean keeps its sign);
  - "features": the export's features, for reference in the same run.
The export's features are what its `feature_source` pools: on an export made before that setting
(or with --feature-source states) they are the top layer's states; since, by default, the token
embeddings' mean and max, which this benchmark chose (the README's "Encoder features").
One benchmark at a time: it uses both cores (hold /tmp/textae-bench.lock, as the sweep does).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as quality  # a sibling script, not a package

from textae.runtime import TextAE
from textae.runtime.postprocess import Whitening, fit_whitening


def token_table(export: Path, vocab_size: int) -> np.ndarray:
    """The encoder's token embedding table (vocab_size, E): the fp32 encoder graph's one initializer
    with vocab_size rows (the decoder reads the same table, tied)."""
    graph = onnx.load(str(export / "encoder.onnx"))  # external weights (weights.bin) load with it
    tables = [numpy_helper.to_array(t) for t in graph.graph.initializer if len(t.dims) == 2 and t.dims[0] == vocab_size]
    if len(tables) != 1:
        raise SystemExit(f"bench_token_mean: {export}/encoder.onnx has {len(tables)} tables of {vocab_size} rows; expected one")
    return tables[0].astype(np.float32)


class TokenMean:
    """The masked mean of each sentence's token embeddings; an empty sentence reads one <pad>, as the encoder does."""

    def __init__(self, model: TextAE, table: np.ndarray, pool: str = "mean", weights: np.ndarray | None = None) -> None:
        self.model, self.table, self.pool, self.weights = model, table, pool, weights
        self.pad_id = model.manifest.special_tokens["pad_id"]

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        rows = []
        for row in self.model.tokenize(list(sentences)):
            ids = row if row else [self.pad_id]
            vectors = self.table[ids]
            if self.pool == "max":
                rows.append(vectors.max(axis=0))
            elif self.pool == "min":
                rows.append(vectors.min(axis=0))
            elif self.pool == "power3":  # Rücklé et al. 2018's p = 3 power mean, sign kept
                rows.append(np.cbrt((vectors.astype(np.float64) ** 3).mean(axis=0)))
            elif self.weights is not None:  # SIF (Arora et al. 2017): a / (a + p(token)) weights
                w = self.weights[ids]
                rows.append((w[:, None] * vectors).sum(axis=0) / max(float(w.sum()), 1e-12))
            else:
                rows.append(vectors.mean(axis=0))
        return np.stack(rows).astype(np.float32)


class Concatenated:
    """Several embedders' vectors side by side, each block optionally whitened and scaled first."""

    def __init__(self, parts: Sequence[object], whitenings: Sequence[Whitening] | None = None) -> None:
        self.parts, self.whitenings = list(parts), whitenings

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        blocks = [part.embed(sentences) for part in self.parts]  # type: ignore[attr-defined]
        if self.whitenings is not None:
            # whitened blocks have about unit variance per dimension: dividing by sqrt(width) gives
            # each block the same expected squared norm, so each weighs the same in a cosine
            blocks = [w.apply(b) / np.sqrt(w.dim) for w, b in zip(self.whitenings, blocks)]
        return np.concatenate(blocks, axis=1)


def candidates(model: TextAE, table: np.ndarray, sample: list[str]) -> dict[str, Callable[[], object]]:
    features = quality.RawTextaeEmbedder(model, "features")
    token_mean = TokenMean(model, table)

    def balanced(*parts: object) -> Callable[[], object]:
        return lambda: Concatenated(list(parts), [fit_whitening(p.embed(sample)) for p in parts])  # type: ignore[attr-defined]

    token_max, token_min = TokenMean(model, table, "max"), TokenMean(model, table, "min")
    vector = quality.RawTextaeEmbedder(model, "sentence_embedding")
    counts = np.bincount(np.concatenate([np.asarray(r, dtype=np.int64) for r in model.tokenize(sample) if r]), minlength=len(table))
    sif = TokenMean(model, table, weights=(1e-3 / (1e-3 + counts / counts.sum())).astype(np.float32))

    return {
        "token mean": lambda: token_mean,
        "features + token mean": lambda: Concatenated([features, token_mean]),
        "features + token mean, balanced": balanced(features, token_mean),
        "token max": lambda: token_max,
        "token mean + max, balanced": balanced(token_mean, token_max),
        "token mean, SIF": lambda: sif,
        "features + token mean + max, balanced": balanced(features, token_mean, token_max),
        "token mean + max + min, balanced": balanced(token_mean, token_max, token_min),
        "vector + token mean + max, balanced": balanced(vector, token_mean, token_max),
        "vector + token mean + max + min, balanced": balanced(vector, token_mean, token_max, token_min),
        "token power means (1, 3, max, min), balanced": balanced(token_mean, TokenMean(model, table, "power3"), token_max, token_min),
        "features": lambda: features,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder with sts/ and probe/ (see its README)")
    parser.add_argument("--export", type=Path, required=True, help="a textae export folder")
    parser.add_argument("--train", type=Path, required=True, help="the run's training sentences (bench_quality's WORK/train.txt)")
    parser.add_argument("--only", nargs="*", default=None, help="measure these candidates only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    console = Console()

    model = TextAE.load(args.export, num_threads=args.threads)
    table = token_table(args.export, model.config.vocab_size)
    sample = quality.whitening_sample(args.train.read_text(encoding="utf-8").splitlines())
    probes = {task: quality.load_probe(args.data, train, test, None, args.seed) for task, (train, test) in quality.PROBE_TASKS.items()}
    chosen = candidates(model, table, sample)
    unknown = sorted(set(args.only or ()) - set(chosen))
    if unknown:
        parser.error(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(chosen)}")
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.only or list(chosen):
        embedder = chosen[name]()
        whitening = fit_whitening(embedder.embed(sample))  # type: ignore[attr-defined]
        figures[name] = {
            "raw": quality.evaluate_method(quality.Method(name, embedder, None), args, probes, console),
            "whitened": quality.evaluate_method(quality.Method(f"{name}, whitened", quality.WhitenedEmbedder(embedder, whitening), None), args, probes, console),
        }  # fmt: skip
        if args.json:  # after every candidate: a stopped run keeps what it measured
            args.json.write_text(json.dumps({"export": str(args.export), "figures": figures}, indent=2), encoding="utf-8")
    tasks = list(next(iter(figures.values()))["raw"]) if figures else []
    console.print("| candidate | " + " | ".join(tasks) + " |")
    console.print("| --- |" + " ---: |" * len(tasks))
    for name, kinds in figures.items():
        for kind, scores in kinds.items():
            console.print(f"| {name}, {kind} | " + " | ".join(f"{scores[task]:.1f}" for task in tasks) + " |")


if __name__ == "__main__":
    main()
