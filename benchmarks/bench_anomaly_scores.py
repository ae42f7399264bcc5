"""Which anomaly score separates held-out in-domain text from another domain best? Measured on an existing export.

    python benchmarks/bench_anomaly_scores.py --data ../shared/data --work RUN [--sentences 2000] [--json results.json]

RUN is a bench_quality.py --work folder: its textae-export/, train.txt and heldout.txt. Issue 22
asks for an anomaly AUROC of 0.99 (held-out in-domain sentences against MR movie-review sentences,
as bench_quality.py measures it); textae's score, the mean per-token negative log-likelihood of a
sentence under the decoder given its own vector, reached 0.92-0.94. This reads other scores off
the same export, nothing retrained:

  - mean NLL (today's `score`), total NLL (not divided by the length), unigram surprisal (the mean
    -log p(token) under the training sample's token counts: a vocabulary-shift baseline);
  - the Mahalanobis distance (squared norm after the runtime's `fit_whitening`, fitted on up to
    10,000 training sentences) of the sentence vector and of the token embeddings' mean and max;
  - mean NLL plus each distance, both z-scored on 3,000 training sentences.

One benchmark at a time: it uses both cores (hold /tmp/textae-bench.lock, as the sweep does).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as quality  # sibling scripts, not a package
import bench_token_mean as token_mean

from textae.evaluation.metrics import auroc
from textae.runtime import TextAE
from textae.runtime.postprocess import fit_whitening

WHITEN_SAMPLE = 10_000
Z_SAMPLE = 3_000


def distances(embed: Callable[[Sequence[str]], np.ndarray], sample: list[str], *texts: list[str]) -> list[np.ndarray]:
    """Squared whitened norms (the Mahalanobis distance to the sample's mean) of each list of texts."""
    whitening = fit_whitening(embed(sample))
    return [(whitening.apply(embed(part)) ** 2).sum(axis=1) for part in texts]


def zscored(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return (values - reference.mean()) / max(float(reference.std()), 1e-12)


def token_nlls(model: TextAE, token_ids: list[list[int]], batch_size: int = 256) -> list[np.ndarray]:
    """Each sentence's per-token negative log-likelihoods (its tokens, then <eos>) under the decoder
    given the sentence's own raw vector, teacher-forced through the one-step graph. Their mean is
    `score`; the per-token view lets a score read the worst tokens instead of the average."""
    config = model.config
    out: list[np.ndarray] = [np.zeros(0)] * len(token_ids)
    for start in range(0, len(token_ids), batch_size):
        rows = token_ids[start : start + batch_size]
        vectors = model.embed_ids(rows, raw=True)
        targets = [list(ids) + [config.eos_id] for ids in rows]
        width = max(len(t) for t in targets)
        (state,) = model.run_graph("decoder_init", sentence_embedding=vectors)
        previous = np.full(len(rows), config.bos_id, dtype=np.int64)
        nll = np.zeros((len(rows), width))
        for step in range(width):
            logits, state = model.run_graph("decoder_step", input_ids=previous, sentence_embedding=vectors, state=state)
            logits = logits.astype(np.float64)
            peak = logits.max(axis=1, keepdims=True)
            log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
            target = np.array([t[step] if step < len(t) else config.pad_id for t in targets], dtype=np.int64)
            nll[:, step] = log_norm - logits[np.arange(len(rows)), target]
            previous = target
        for offset, t in enumerate(targets):
            out[start + offset] = nll[offset, : len(t)]
    return out


def top_mean(values: np.ndarray, k: int) -> float:
    return float(np.sort(values)[-k:].mean())


def measure(model: TextAE, table: np.ndarray, heldout: list[str], out: list[str], sample: list[str]) -> dict[str, float]:
    reference = sample[:Z_SAMPLE]
    nll_in, nll_out, nll_ref = (model.score(part) for part in (heldout, out, reference))
    ids_in, ids_out = model.tokenize(heldout), model.tokenize(out)
    tokens_in = np.array([len(ids) + 1 for ids in ids_in])  # the score averages over the tokens and <eos>
    tokens_out = np.array([len(ids) + 1 for ids in ids_out])
    figures = {"mean NLL (today's score)": auroc(nll_in, nll_out), "total NLL": auroc(nll_in * tokens_in, nll_out * tokens_out)}
    counts = np.bincount(np.concatenate([np.asarray(ids) for ids in model.tokenize(sample) if ids]), minlength=len(table)) + 1
    surprisal = -np.log(counts / counts.sum())

    def unigram(rows: list[list[int]]) -> np.ndarray:
        return np.array([surprisal[ids].mean() if ids else 0.0 for ids in rows])

    figures["unigram surprisal"] = auroc(unigram(ids_in), unigram(ids_out))
    per_token_in, per_token_out = token_nlls(model, ids_in), token_nlls(model, ids_out)
    figures["mean NLL, one-step graph (check: equals today's)"] = auroc(
        np.array([v.mean() for v in per_token_in]), np.array([v.mean() for v in per_token_out])
    )
    figures["max token NLL"] = auroc(np.array([v.max() for v in per_token_in]), np.array([v.max() for v in per_token_out]))
    for k in (2, 3, 5):
        figures[f"mean of the {k} worst token NLLs"] = auroc(
            np.array([top_mean(v, k) for v in per_token_in]), np.array([top_mean(v, k) for v in per_token_out])
        )

    def ratio(rows: list[list[int]], nlls: list[np.ndarray]) -> np.ndarray:
        # Ren et al. 2019's likelihood ratio, per token: the decoder's surprise beyond the unigram's
        return np.array([(v[: len(ids)] - surprisal[ids]).mean() if ids else float(v.mean()) for ids, v in zip(rows, nlls)])

    figures["likelihood ratio: mean (token NLL - unigram surprisal)"] = auroc(ratio(ids_in, per_token_in), ratio(ids_out, per_token_out))
    pools = token_mean.Concatenated([token_mean.TokenMean(model, table), token_mean.TokenMean(model, table, "max")])
    embedders = {"sentence vector": lambda texts: model.embed(list(texts), raw=True), "token mean + max": pools.embed}
    for name, embed in embedders.items():
        far_in, far_out, far_ref = distances(embed, sample, heldout, out, reference)
        figures[f"Mahalanobis, {name}"] = auroc(far_in, far_out)
        combined_in = zscored(nll_in, nll_ref) + zscored(far_in, far_ref)
        combined_out = zscored(nll_out, nll_ref) + zscored(far_out, far_ref)
        figures[f"mean NLL + Mahalanobis, {name} (z-scored)"] = auroc(combined_in, combined_out)
        # typicality (Nalisnick et al. 2019): an input can be atypically *near* the mean, too
        typical = float(np.median(far_ref))
        atypical_in, atypical_out, atypical_ref = (np.abs(np.log(d + 1e-9) - np.log(typical)) for d in (far_in, far_out, far_ref))
        figures[f"atypical Mahalanobis (|log d - log median|), {name}"] = auroc(atypical_in, atypical_out)
        figures[f"mean NLL + atypical Mahalanobis, {name} (z-scored)"] = auroc(
            zscored(nll_in, nll_ref) + zscored(atypical_in, atypical_ref), zscored(nll_out, nll_ref) + zscored(atypical_out, atypical_ref)
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder with probe/MR.tsv (see its README)")
    parser.add_argument("--work", type=Path, required=True, help="a bench_quality.py --work folder")
    parser.add_argument("--out-domain", type=Path, default=None, help="another domain's text (default: DATA/probe/MR.tsv)")
    parser.add_argument("--sentences", type=int, default=2000, help="sentences of each side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    export = args.work / "textae-export"
    model = TextAE.load(export, num_threads=args.threads)
    table = token_mean.token_table(export, model.config.vocab_size)
    heldout = [line for line in (args.work / "heldout.txt").read_text(encoding="utf-8").splitlines() if line.strip()][: args.sentences]
    out = quality.read_out_domain(args.out_domain or args.data / "probe" / "MR.tsv", args.sentences, args.seed)
    sample = quality.whitening_sample((args.work / "train.txt").read_text(encoding="utf-8").splitlines())[:WHITEN_SAMPLE]
    figures = measure(model, table, heldout, out, sample)
    print(f"anomaly AUROC, {len(heldout):,} held-out in-domain sentences against {len(out):,} of another domain ({export})")
    print("| score | AUROC |\n| --- | ---: |")
    for name, value in figures.items():
        print(f"| {name} | {value:.4f} |")
    if args.json:
        args.json.write_text(json.dumps({"export": str(export), "figures": figures}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
