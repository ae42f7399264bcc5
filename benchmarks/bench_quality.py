"""Sentence-vector quality of textae against two classic unsupervised baselines, on one corpus.

    python benchmarks/bench_quality.py --data ../shared/data [--corpus FILE ...] [--steps N]
        [--textae-run RUN_OR_EXPORT_DIR] [--work runs/bench-quality] [--json results.json]

Trains, on the same sentences: textae (textae.train.train, then textae.export.export_model, and
measured through the torch-free runtime), gensim Doc2Vec PV-DBOW, and TF-IDF + TruncatedSVD (LSA),
all with --dim dimensions. Reports in one table:
  - STS-B dev and SICK trial: Spearman x100 of the cosine similarity against the gold score;
  - logistic-regression probe accuracy on MR, CR, SUBJ, MPQA, TREC (10-fold CV) and SST-2 (train on
    SST2.train, test on SST2.dev), and their average;
  - textae's exact reconstruction of held-out in-domain sentences of <= 20 model tokens;
  - each method's training CPU time (all threads, from time.process_time).
and checks the targets: textae beats both baselines on STS-B dev and on average probe accuracy;
>= 90 % exact reconstruction of the held-out sentences.

Budgets: Doc2Vec gets --doc2vec-epochs passes and TF-IDF + SVD one fit; both need far less CPU than
textae and stop improving long before they would match its time (their CPU seconds are printed, so
the comparison is visible). A cheaper baseline that wins is a harder bar for textae, not an easier one.

Split: the corpus lines are de-duplicated and shuffled with --seed; the first --held-out go to
heldout.txt, the next --valid to valid.txt (textae's validation set), the rest (capped at
--sentences) to train.txt, all in --work. Every method trains on train.txt. --textae-run reuses a
run (or export) folder instead of training, e.g. the one an earlier invocation wrote to
WORK/textae-run; any held-out sentence found in that run's training files is dropped, so the
reconstruction score stays a held-out one.

The data folder is the one described in ../shared/data/README.md; nothing here is committed.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from textae.corpus import iter_corpus, resolve_paths
from textae.evaluation.probes import probe_accuracy
from textae.evaluation.readers import read_labelled_file
from textae.evaluation.reconstruction import reconstruct_ids, summarize_reconstruction
from textae.evaluation.similarity import embed_unique, evaluate_sts
from textae.extras import import_optional
from textae.runtime.model import TextAE
from textae.tokenizer import encode_batch

STS_TASKS = {"STS-B dev": "sts/stsb-dev.tsv", "SICK trial": "sts/sick-trial.tsv"}
# task -> (training file, test file or None for 10-fold cross-validation)
PROBE_TASKS = {
    "MR": ("probe/MR.tsv", None),
    "CR": ("probe/CR.tsv", None),
    "SUBJ": ("probe/SUBJ.tsv", None),
    "MPQA": ("probe/MPQA.tsv", None),
    "TREC": ("probe/TREC.train.tsv", None),
    "SST-2 dev": ("probe/SST2.train.tsv", "probe/SST2.dev.tsv"),
}
RECONSTRUCT_MAX_TOKENS = 20
EXACT_MATCH_TARGET = 90.0
WORD = re.compile(r"\w+|[^\w\s]")


def words(sentence: str) -> list[str]:
    """The baselines' tokenization: lower-cased words and punctuation marks."""
    return WORD.findall(sentence.lower())


# --- the methods, each an object with embed(sentences) -> (N, D) -----------------------------


@dataclass
class Method:
    name: str
    model: Any  # has embed(sentences) -> np.ndarray
    cpu_seconds: float | None  # training CPU time; None when a trained run was reused
    notes: str = ""


class Doc2VecEmbedder:
    def __init__(self, sentences: list[str], dim: int, epochs: int, threads: int, seed: int) -> None:
        doc2vec = import_optional("gensim.models.doc2vec", "the Doc2Vec baseline")
        documents = [doc2vec.TaggedDocument(words(s), [i]) for i, s in enumerate(sentences)]
        # PV-DBOW (dm=0) with interleaved skip-gram word training: the strong setting of Lau & Baldwin (2016).
        # With workers > 1 gensim's training order is not deterministic: scores vary by about a point.
        self.model = doc2vec.Doc2Vec(
            documents, dm=0, dbow_words=1, vector_size=dim, window=5, min_count=2, sample=1e-4,
            negative=5, epochs=epochs, workers=threads, seed=seed,
        )  # fmt: skip

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        # inference is stochastic; a fixed seed per call keeps runs repeatable
        self.model.random.seed(0)
        return np.stack([self.model.infer_vector(words(s)) for s in sentences]).astype(np.float32)


class LsaEmbedder:
    def __init__(self, sentences: list[str], dim: int, seed: int) -> None:
        import_optional("sklearn", "the TF-IDF + SVD baseline")
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.tfidf = TfidfVectorizer(tokenizer=words, lowercase=False, token_pattern=None, sublinear_tf=True, min_df=2, ngram_range=(1, 2))
        self.svd = TruncatedSVD(n_components=dim, random_state=seed)
        self.svd.fit(self.tfidf.fit_transform(sentences))

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        return self.svd.transform(self.tfidf.transform(list(sentences))).astype(np.float32)


def train_textae(args: argparse.Namespace, split: dict[str, Path]) -> tuple[Path, float]:
    """Train on train.txt (validating on valid.txt), export; return (export folder, CPU seconds)."""
    import torch

    from textae.config import ModelConfig, TrainConfig
    from textae.export.folder import export_model
    from textae.training.loop import train

    run_dir = args.work / "textae-run"
    overrides: dict[str, Any] = {"max_steps": args.steps} if args.steps else {}
    if args.learning_rate:
        overrides["learning_rate"] = args.learning_rate
    config = TrainConfig(
        corpus=[str(split["train"])], valid=str(split["valid"]), out=str(run_dir), epochs=args.epochs,
        batch_size=args.batch_size, num_threads=args.threads, seed=args.seed, noise=args.noise, **overrides,
    )  # fmt: skip
    torch.set_num_threads(args.threads)
    started = time.process_time()
    model_config = ModelConfig(
        latent_dim=args.dim, hidden_size=args.hidden_size, embedding_dim=args.embedding_dim, pooling=args.pooling,
        reverse_input=args.reverse_input,
    )
    train(config, model_config, show_progress=not args.quiet)
    cpu = time.process_time() - started
    export_dir = args.work / "textae-export"
    export_model(run_dir, export_dir, console=Console(file=io.StringIO()))
    return export_dir, cpu


def reused_textae(args: argparse.Namespace) -> Path:
    """An export folder for --textae-run: itself when it is one, else a fresh export of the run."""
    folder = Path(args.textae_run)
    if (folder / "textae.json").is_file():
        return folder
    from textae.export.folder import export_model

    export_dir = args.work / f"textae-export-{folder.resolve().name}"
    export_model(folder, export_dir, console=Console(file=io.StringIO()))
    return export_dir


def run_training_sentences(folder: Path) -> set[str]:
    """Sentences a reused run was trained on (from its config.json), to keep them out of the held-out set."""
    from textae.config import load_json

    config_path = folder / "config.json"
    if not config_path.is_file():  # an export folder: its manifest's training summary names no files
        return set()
    corpus = load_json(config_path).get("train", {}).get("corpus", [])
    existing = [pattern for pattern in corpus if Path(pattern).exists() or any(ch in pattern for ch in "*?[")]
    return set(iter_corpus(resolve_paths(existing))) if existing else set()


# --- data -------------------------------------------------------------------------------------


def make_split(args: argparse.Namespace) -> dict[str, Path]:
    corpus = args.corpus or sorted(str(p) for p in (args.data / "corpora").glob("*.txt"))
    sentences = list(dict.fromkeys(iter_corpus(resolve_paths(corpus))))  # de-duplicated, first order kept
    random.Random(args.seed).shuffle(sentences)
    held_out = sentences[: args.held_out]
    valid = sentences[args.held_out : args.held_out + args.valid]
    train = sentences[args.held_out + args.valid :][: args.sentences]
    args.work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, lines in (("train", train), ("valid", valid), ("heldout", held_out)):
        paths[name] = args.work / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


@dataclass
class ProbeData:
    texts: list[str]
    labels: list[str]
    test_texts: list[str] = field(default_factory=list)
    test_labels: list[str] = field(default_factory=list)


def load_probe(data: Path, train_file: str, test_file: str | None, limit: int | None, seed: int) -> ProbeData:
    """A probe task, its training part shuffled and capped at limit examples (files can be sorted by label)."""
    train = read_labelled_file(data / train_file)
    rows = list(range(len(train.texts)))
    random.Random(seed).shuffle(rows)
    rows = rows[:limit] if limit else rows
    probe = ProbeData([train.texts[i] for i in rows], [train.labels[i] for i in rows])
    if test_file:
        test = read_labelled_file(data / test_file)
        probe.test_texts, probe.test_labels = test.texts, test.labels
    return probe


# --- evaluation -------------------------------------------------------------------------------


def evaluate_method(method: Method, args: argparse.Namespace, probes: dict[str, ProbeData], console: Console) -> dict[str, float]:
    scores: dict[str, float] = {}
    for task, relative in STS_TASKS.items():
        started = time.perf_counter()
        scores[task] = evaluate_sts(method.model, args.data / relative).spearman
        console.log(f"{method.name}: {task} Spearman x100 {scores[task]:.1f} ({time.perf_counter() - started:.0f} s)")
    for task, probe in probes.items():
        started = time.perf_counter()
        features = embed_unique(method.model, probe.texts)
        if probe.test_texts:
            test_features = embed_unique(method.model, probe.test_texts)
            accuracy, _, _ = probe_accuracy(features, probe.labels, test_features, probe.test_labels, seed=args.seed)
        else:
            accuracy, _, _ = probe_accuracy(features, probe.labels, seed=args.seed)
        scores[task] = accuracy
        console.log(f"{method.name}: {task} accuracy {accuracy:.1f} % ({time.perf_counter() - started:.0f} s)")
    scores["probe average"] = float(np.mean([scores[task] for task in probes]))
    return scores


def held_out_reconstruction(model: TextAE, heldout: Path, excluded: set[str], limit: int) -> tuple[float, int, int]:
    """(exact match %, sentences measured, held-out sentences dropped as seen in training)."""
    sentences = [s for s in heldout.read_text(encoding="utf-8").splitlines() if s.strip()]
    kept = [s for s in sentences if s not in excluded]
    lengths = [len(ids) for ids in encode_batch(model.tokenizer, kept, 1 << 30)]
    short = [s for s, n in zip(kept, lengths) if 0 < n <= RECONSTRUCT_MAX_TOKENS][:limit]
    if not short:
        return float("nan"), 0, len(sentences) - len(kept)
    result = summarize_reconstruction(str(heldout), *reconstruct_ids(model, short))
    return result.exact_match, len(short), len(sentences) - len(kept)


def print_results(console: Console, methods: list[Method], results: dict[str, dict[str, float]], recon: tuple[float, int, int], probes: dict[str, ProbeData]) -> dict[str, bool]:
    names = [m.name for m in methods]
    table = Table(title="sentence-vector quality (Spearman x100; accuracy %)")
    table.add_column("task")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("target")
    textae, baselines = names[0], names[1:]

    def row(task: str, target: str = "", bold: bool = False) -> None:
        cells = [f"{results[n][task]:.1f}" for n in names]
        style = "[bold]" if bold else ""
        table.add_row(style + task, *(style + c for c in cells), target)

    row("STS-B dev", "> both", bold=True)
    row("SICK trial")
    for task in probes:
        row(task)
    row("probe average", "> both", bold=True)
    exact, measured, dropped = recon
    table.add_row(
        "[bold]held-out exact match %",
        f"[bold]{exact:.1f}", *(["n/a"] * len(baselines)), f">= {EXACT_MATCH_TARGET:.0f}",
    )  # fmt: skip
    table.add_row("training CPU s", *("reused" if m.cpu_seconds is None else f"{m.cpu_seconds:,.0f}" for m in methods), "")
    console.print(table)
    console.print(
        f"held-out exact match: textae's greedy reconstruction of {measured:,} in-domain sentences of "
        f"<= {RECONSTRUCT_MAX_TOKENS} model tokens that no method trained on"
    )
    if dropped:
        console.print(f"{dropped} held-out sentences were dropped because the reused run trained on them")
    met = {
        "STS-B dev": all(results[textae]["STS-B dev"] > results[b]["STS-B dev"] for b in baselines),
        "probe average": all(results[textae]["probe average"] > results[b]["probe average"] for b in baselines),
        "exact reconstruction": bool(exact >= EXACT_MATCH_TARGET),
    }
    for target, ok in met.items():
        console.print(f"target {target}: {'met' if ok else 'NOT met'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder with corpora/, sts/ and probe/ (see its README)")
    parser.add_argument("--corpus", nargs="*", help="training text files (default: every DATA/corpora/*.txt)")
    parser.add_argument("--sentences", type=int, default=None, help="cap on training sentences (default: all)")
    parser.add_argument("--held-out", type=int, default=2000, help="in-domain sentences kept out of training")
    parser.add_argument("--valid", type=int, default=1000, help="textae validation sentences (kept out of training)")
    parser.add_argument("--reconstruct-limit", type=int, default=1000, help="held-out sentences to reconstruct")
    parser.add_argument("--probe-limit", type=int, default=None, help="cap on probe training examples per task (quick runs)")
    parser.add_argument("--textae-run", type=Path, help="reuse this run or export folder instead of training textae")
    parser.add_argument("--steps", type=int, default=None, help="textae training steps (default: --epochs)")
    parser.add_argument("--epochs", type=int, default=10, help="textae epochs when --steps is not given")
    parser.add_argument("--dim", type=int, default=256, help="vector width of every method (textae's latent_dim)")
    parser.add_argument("--hidden-size", type=int, default=512, help="textae recurrent state width")
    parser.add_argument("--embedding-dim", type=int, default=256, help="textae token embedding width")
    parser.add_argument("--batch-size", type=int, default=128, help="textae sentences per step")
    parser.add_argument("--doc2vec-epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pooling", default="final", help="textae sentence vector: final, mean or max")
    parser.add_argument("--reverse-input", action=argparse.BooleanOptionalAction, default=True, help="textae encoder reads sentences back to front")
    parser.add_argument("--learning-rate", type=float, default=None, help="textae peak learning rate (default: textae's)")
    parser.add_argument("--noise", default="", help="textae denoising input noise, e.g. delete:0.1,swap:0.1,mask:0.1")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-quality"), help="split files, run and export")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--quiet", action="store_true", help="no training progress bar")
    args = parser.parse_args()
    console = Console()

    # read before the split files are rewritten: a reused run may name WORK/train.txt as its corpus
    excluded = run_training_sentences(Path(args.textae_run)) if args.textae_run else set()
    split = make_split(args)
    train_sentences = split["train"].read_text(encoding="utf-8").splitlines()
    console.log(f"{len(train_sentences):,} training sentences in {split['train']}")

    if args.textae_run:
        export_dir, textae_cpu = reused_textae(args), None
    else:
        export_dir, textae_cpu = train_textae(args, split)
    textae = TextAE.load(export_dir, num_threads=args.threads)
    methods = [Method("textae", textae, textae_cpu)]
    started = time.process_time()
    doc2vec = Doc2VecEmbedder(train_sentences, args.dim, args.doc2vec_epochs, args.threads, args.seed)
    methods.append(Method("Doc2Vec PV-DBOW", doc2vec, time.process_time() - started))
    started = time.process_time()
    lsa = LsaEmbedder(train_sentences, args.dim, args.seed)
    methods.append(Method("TF-IDF + SVD", lsa, time.process_time() - started))

    probes = {task: load_probe(args.data, train, test, args.probe_limit, args.seed) for task, (train, test) in PROBE_TASKS.items()}
    results = {method.name: evaluate_method(method, args, probes, console) for method in methods}
    recon = held_out_reconstruction(textae, split["heldout"], excluded, args.reconstruct_limit)
    met = print_results(console, methods, results, recon, probes)
    if args.json:
        args.json.write_text(json.dumps({
            "results": results, "exact_reconstruction": recon[0], "reconstructed": recon[1], "targets_met": met,
            "cpu_seconds": {m.name: m.cpu_seconds for m in methods}, "export": str(export_dir), "args": {k: str(v) for k, v in vars(args).items()},
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
