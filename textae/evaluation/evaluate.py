"""Measure an exported model: reconstruction, sentence similarity, linear probes, anomaly detection.

Torch-free: everything runs on `textae.runtime.TextAE` (onnxruntime). The similarity, probe and
anomaly evaluations accept any object with an `embed(sentences)` / `score(sentences)` method, so a
benchmark can put baselines through the very same code.

Scales follow each field's convention: Spearman, accuracy, token accuracy, exact match and chrF are
percentages (0-100, as SentEval and sacrebleu report them); AUROC is a probability (0-1).

Input files (UTF-8, blank lines skipped, an optional header line naming the columns is skipped):
    --text         one sentence a line
    --sts          score<TAB>sentence1<TAB>sentence2
    --probe        label<TAB>text
    --anomalies    two plain text files: in-domain, out-of-domain
A malformed line is a TextaeError naming the file and the line.

scikit-learn (probe) and sacrebleu (chrF) come from the `eval` extra and are imported only when used.
"""

from __future__ import annotations

import importlib
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike
from rich.console import Console
from rich.table import Table

from textae.corpus import check_readable_file, iter_numbered_lines
from textae.errors import TextaeError
from textae.runtime.model import TextAE
from textae.runtime.files import read_sentences
from textae.tokenizer import decode_batch, encode_batch

EVAL_EXTRA_HINT = 'pip install "textae[eval]"'
PROBE_FOLDS = 10
# Upper ends (inclusive, in model tokens) of the length buckets of the reconstruction report.
LENGTH_BUCKETS = (5, 10, 20, 40)
RECONSTRUCT_BATCH = 64
UNTRUNCATED = 1 << 30  # encode_batch cap that never cuts: references keep every token


class Embedder(Protocol):
    def embed(self, sentences: Sequence[str]) -> np.ndarray: ...


class Scorer(Protocol):
    def score(self, sentences: Sequence[str]) -> np.ndarray: ...


def import_optional(module: str, purpose: str) -> ModuleType:
    """Import a module of the `eval` extra, or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TextaeError(f"{purpose} needs {module.split('.')[0]}, which is not installed: {EVAL_EXTRA_HINT}") from None


# --- results -----------------------------------------------------------------------------------


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


@dataclass
class StsResult:
    path: str
    pairs: int
    spearman: float  # x100, cosine similarity against the gold scores


@dataclass
class ProbeResult:
    path: str
    test_path: str | None  # None: cross-validated on path alone
    examples: int
    test_examples: int  # examples the accuracy is measured on (all of them under cross-validation)
    classes: list[str]
    folds: int  # 0 with a fixed test file
    accuracy: float  # %, mean over folds
    accuracy_std: float  # %, over folds (0 with a fixed test file)


@dataclass
class AnomalyResult:
    in_path: str
    out_path: str
    in_sentences: int
    out_sentences: int
    auroc: float  # P(an out-of-domain sentence scores higher than an in-domain one), ties count half
    in_mean_score: float
    out_mean_score: float


@dataclass
class EvaluationReport:
    model: str
    reconstruction: ReconstructionResult | None = None
    sts: StsResult | None = None
    probe: ProbeResult | None = None
    anomalies: AnomalyResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


# --- reading evaluation files ------------------------------------------------------------------


@dataclass
class StsPairs:
    scores: np.ndarray  # (N,) float64 gold similarity
    first: list[str]
    second: list[str]


@dataclass
class LabelledTexts:
    labels: list[str]
    texts: list[str]
    lines: list[int] = field(repr=False)  # line number of each example, for error messages


def iter_tsv_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped fields) of each non-blank line of a UTF-8 tab-separated file.

    Every line must have exactly len(columns) non-empty fields. A first line that just names the
    columns is a header and is skipped.
    """
    path = Path(path)
    check_readable_file(path)
    names = [column.lower() for column in columns]
    for lineno, line in iter_numbered_lines(path):
        if not line.strip():
            continue
        # split before stripping: a leading tab is an empty first column, not indentation
        fields = [item.strip() for item in line.split("\t")]
        if len(fields) != len(columns):
            raise TextaeError(
                f"{path}:{lineno}: expected {len(columns)} tab-separated columns ({', '.join(columns)}), found {len(fields)}"
            )
        if lineno == 1 and [item.lower() for item in fields] == names:
            continue
        for column, item in zip(columns, fields):
            if not item:
                raise TextaeError(f"{path}:{lineno}: the {column} column is empty")
        yield lineno, fields


def read_sts_file(path: Path) -> StsPairs:
    """Pairs of a `score<TAB>sentence1<TAB>sentence2` file; the score must be a finite number."""
    scores: list[float] = []
    first: list[str] = []
    second: list[str] = []
    for lineno, (score, sentence1, sentence2) in iter_tsv_rows(path, ("score", "sentence1", "sentence2")):
        try:
            value = float(score)
        except ValueError:
            raise TextaeError(f"{path}:{lineno}: score {score!r} is not a number") from None
        if not np.isfinite(value):
            raise TextaeError(f"{path}:{lineno}: score {score!r} is not a finite number")
        scores.append(value)
        first.append(sentence1)
        second.append(sentence2)
    if not scores:
        raise TextaeError(f"{path}: no sentence pairs (the file is empty); expected score<TAB>sentence1<TAB>sentence2 lines")
    return StsPairs(np.array(scores, dtype=np.float64), first, second)


def read_labelled_file(path: Path) -> LabelledTexts:
    """Examples of a `label<TAB>text` file, labels kept as strings."""
    data = LabelledTexts([], [], [])
    for lineno, (label, text) in iter_tsv_rows(path, ("label", "text")):
        data.labels.append(label)
        data.texts.append(text)
        data.lines.append(lineno)
    if not data.texts:
        raise TextaeError(f"{path}: no examples (the file is empty); expected label<TAB>text lines")
    return data


def read_text_file(path: Path) -> list[str]:
    """Non-empty lines of a plain text file; an empty file is an error, not a zero-sentence result."""
    sentences = read_sentences(path)
    if not sentences:
        raise TextaeError(f"{path}: no sentences (the file is empty or blank)")
    return sentences


def check_probe_labels(data: LabelledTexts, path: Path, folds: int | None) -> None:
    """A probe needs two classes; cross-validation needs two examples of each (a fold must hold one out)."""
    counts: dict[str, int] = {}
    for label in data.labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        raise TextaeError(
            f"{path}: every example (lines {data.lines[0]}-{data.lines[-1]}) has label {data.labels[0]!r}; "
            "a probe needs at least two labels"
        )
    if folds is not None:
        rare = min(counts, key=lambda label: counts[label])
        if counts[rare] < 2:
            line = data.lines[data.labels.index(rare)]
            raise TextaeError(f"{path}:{line}: label {rare!r} occurs only here; cross-validation needs at least 2 examples per label")


# --- metrics (numpy only) ----------------------------------------------------------------------


def rankdata(values: ArrayLike) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span (scipy's 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    # runs of equal values in sorted order: every member gets the mean of the run's ranks
    _, first_index, counts = np.unique(values[order], return_index=True, return_counts=True)
    for start, count in zip(first_index, counts):
        if count > 1:
            ranks[order[start : start + count]] = start + (count + 1) / 2
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation in [-1, 1]: Pearson's r of the average ranks. NaN when either
    side is constant (the correlation is undefined)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D arrays of the same length, got {x.shape} and {y.shape}")
    rank_x, rank_y = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denominator = np.sqrt((rank_x**2).sum() * (rank_y**2).sum())
    return float((rank_x * rank_y).sum() / denominator) if denominator > 0 else float("nan")


def auroc(negative_scores: ArrayLike, positive_scores: ArrayLike) -> float:
    """Area under the ROC curve for 'positive scores higher', via the Mann-Whitney U statistic:
    the probability that a random positive outscores a random negative, ties counting half."""
    negative = np.asarray(negative_scores, dtype=np.float64).ravel()
    positive = np.asarray(positive_scores, dtype=np.float64).ravel()
    if len(negative) == 0 or len(positive) == 0:
        raise ValueError("auroc needs at least one score on each side")
    ranks = rankdata(np.concatenate([negative, positive]))
    u_statistic = ranks[len(negative) :].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u_statistic / (len(negative) * len(positive)))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of a with the same row of b; 0 where a vector is all zeros."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny), 0.0)


def probe_accuracy(
    features: np.ndarray,
    labels: Sequence[str],
    test_features: np.ndarray | None = None,
    test_labels: Sequence[str] | None = None,
    *,
    folds: int = PROBE_FOLDS,
    seed: int = 0,
) -> tuple[float, float, int]:
    """(accuracy %, std % over folds, folds used) of a logistic-regression probe on frozen features.

    Features are standardized inside the pipeline, so each fold's scaler sees only its training
    part. Without test data: stratified k-fold cross-validation, with k lowered to the size of the
    rarest class when that is smaller (folds used is returned). With test data: one fit, one score.
    """
    import_optional("sklearn", "the probe evaluation")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    y = np.asarray(labels)
    if test_features is not None:
        probe.fit(features, y)
        return float(100 * probe.score(test_features, np.asarray(test_labels))), 0.0, 0
    _, counts = np.unique(y, return_counts=True)
    folds = int(min(folds, counts.min()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    accuracies = 100 * cross_val_score(probe, features, y, cv=splitter)
    return float(accuracies.mean()), float(accuracies.std()), folds


# --- evaluations -------------------------------------------------------------------------------


def evaluate_sts(model: Embedder, path: Path) -> StsResult:
    """Spearman x100 between the cosine similarity of each pair's vectors and its gold score."""
    pairs = read_sts_file(path)
    vectors = embed_unique(model, pairs.first + pairs.second)
    similarity = row_cosines(vectors[: len(pairs.first)], vectors[len(pairs.first) :])
    correlation = spearman(similarity, pairs.scores)
    if np.isnan(correlation):
        raise TextaeError(f"{path}: Spearman correlation is undefined (all gold scores, or all similarities, are equal)")
    return StsResult(str(path), len(pairs.scores), 100 * correlation)


def evaluate_probe(model: Embedder, path: Path, test_path: Path | None = None, *, folds: int = PROBE_FOLDS, seed: int = 0) -> ProbeResult:
    """Accuracy of a logistic-regression probe: cross-validated on path, or trained on path and
    tested on test_path."""
    train = read_labelled_file(path)
    check_probe_labels(train, path, None if test_path else folds)
    test = read_labelled_file(test_path) if test_path is not None else None
    if test is not None:
        known = set(train.labels)
        for label, line in zip(test.labels, test.lines):
            if label not in known:
                raise TextaeError(f"{test_path}:{line}: label {label!r} does not occur in the training file {path}")
    import_optional("sklearn", "the probe evaluation")  # fail before spending time on embedding
    features = embed_unique(model, train.texts)
    if test is None:
        accuracy, spread, used = probe_accuracy(features, train.labels, folds=folds, seed=seed)
        measured_on = len(train.texts)
    else:
        test_features = embed_unique(model, test.texts)
        accuracy, spread, used = probe_accuracy(features, train.labels, test_features, test.labels, seed=seed)
        measured_on = len(test.texts)
    classes = sorted(set(train.labels))
    return ProbeResult(str(path), str(test_path) if test_path else None, len(train.texts), measured_on, classes, used, accuracy, spread)


def evaluate_anomalies(model: Scorer, in_path: Path, out_path: Path) -> AnomalyResult:
    """AUROC of the anomaly score at telling out_path's sentences from in_path's (1.0: perfect)."""
    inside, outside = read_text_file(in_path), read_text_file(out_path)
    in_scores, out_scores = model.score(inside), model.score(outside)
    return AnomalyResult(
        str(in_path), str(out_path), len(inside), len(outside),
        auroc(in_scores, out_scores), float(np.mean(in_scores)), float(np.mean(out_scores)),
    )  # fmt: skip


def evaluate_reconstruction(model: TextAE, path: Path, buckets: Sequence[int] = LENGTH_BUCKETS) -> ReconstructionResult:
    """Encode and greedily decode every sentence of path; compare with the input, per length bucket.

    Lengths and token accuracy count the model's own subword tokens of the whole sentence, so a
    sentence longer than the model's max_length cannot be reproduced exactly and counts as such.
    """
    import_optional("sacrebleu", "chrF")
    reference_ids, hypothesis_ids, references, hypotheses = reconstruct_ids(model, read_text_file(path))
    return summarize_reconstruction(str(path), reference_ids, hypothesis_ids, references, hypotheses, buckets=buckets)


def reconstruct_ids(model: TextAE, sentences: Sequence[str]) -> tuple[list[list[int]], list[list[int]], list[str], list[str]]:
    """(reference ids, reconstructed ids, reference texts, reconstructed texts), in input order."""
    # NFC + strip: what the tokenizer and decoder produce, so a round trip can compare equal
    references = [unicodedata.normalize("NFC", sentence.strip()) for sentence in sentences]
    reference_ids = encode_batch(model.tokenizer, references, UNTRUNCATED)
    hypothesis_ids: list[list[int]] = [[] for _ in references]
    # batches of similar length: the decoder Loop stops when its longest row is done
    order = np.argsort([len(ids) for ids in reference_ids], kind="stable")
    for start in range(0, len(order), RECONSTRUCT_BATCH):
        rows = order[start : start + RECONSTRUCT_BATCH]
        vectors = model.embed([references[row] for row in rows], batch_size=RECONSTRUCT_BATCH)
        for row, ids in zip(rows, model.greedy_ids(vectors)):
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


def embed_unique(model: Embedder, sentences: Sequence[str]) -> np.ndarray:
    """Vectors of sentences, embedding each distinct sentence once (STS and probe sets repeat some)."""
    unique, inverse = np.unique(np.array(sentences, dtype=object), return_inverse=True)
    vectors = np.asarray(model.embed(list(unique)))
    return vectors[inverse.ravel()]


def evaluate_model(
    model: TextAE,
    *,
    text: Path | None = None,
    sts: Path | None = None,
    probe: Path | None = None,
    probe_test: Path | None = None,
    anomalies: tuple[Path, Path] | None = None,
) -> EvaluationReport:
    """Run every evaluation whose input is given; inputs and optional packages are checked first,
    so a typo in the last file does not cost the time of the first evaluation."""
    if probe_test is not None and probe is None:
        raise TextaeError("--probe-test needs --probe (the file the probe is trained on)")
    if text is None and sts is None and probe is None and anomalies is None:
        raise TextaeError("nothing to evaluate: give --text, --sts, --probe and/or --anomalies")
    for path in [text, sts, probe, probe_test, *(anomalies or ())]:
        if path is not None:
            check_readable_file(Path(path))
    if text is not None:
        import_optional("sacrebleu", "chrF")
    if probe is not None:
        import_optional("sklearn", "the probe evaluation")
    report = EvaluationReport(str(model.folder))
    if text is not None:
        report.reconstruction = evaluate_reconstruction(model, Path(text))
    if sts is not None:
        report.sts = evaluate_sts(model, Path(sts))
    if probe is not None:
        report.probe = evaluate_probe(model, Path(probe), Path(probe_test) if probe_test else None)
    if anomalies is not None:
        report.anomalies = evaluate_anomalies(model, Path(anomalies[0]), Path(anomalies[1]))
    return report


# --- presentation ------------------------------------------------------------------------------


def print_report(report: EvaluationReport, console: Console) -> None:
    """The report as rich tables: reconstruction by length bucket, then one row per other evaluation."""
    if report.reconstruction is not None:
        result = report.reconstruction
        table = Table(title=f"reconstruction of {result.path}", title_justify="left")
        for column in ("tokens", "sentences", "token accuracy %", "exact match %", "chrF"):
            table.add_column(column, justify="right")
        for bucket in result.buckets:
            table.add_row(bucket.tokens, f"{bucket.sentences:,}", f"{bucket.token_accuracy:.1f}", f"{bucket.exact_match:.1f}", f"{bucket.chrf:.1f}")
        table.add_row("[bold]all", f"[bold]{result.sentences:,}", f"[bold]{result.token_accuracy:.1f}", f"[bold]{result.exact_match:.1f}", f"[bold]{result.chrf:.1f}")
        console.print(table)
    # the result column first: when the terminal is narrow, rich wraps the long "on" column instead
    summary = Table(title="embeddings and scores" if report.reconstruction is None else None)
    summary.add_column("evaluation", no_wrap=True)
    summary.add_column("result", justify="right", no_wrap=True)
    summary.add_column("on")
    if report.sts is not None:
        summary.add_row("similarity", f"Spearman x100 {report.sts.spearman:.1f}", f"{report.sts.path} ({report.sts.pairs:,} pairs)")
    if report.probe is not None:
        probe = report.probe
        if probe.test_path is None:
            accuracy, how = f"accuracy {probe.accuracy:.1f} ± {probe.accuracy_std:.1f} %", f"{probe.folds}-fold CV"
        else:
            accuracy, how = f"accuracy {probe.accuracy:.1f} %", f"tested on {probe.test_path} ({probe.test_examples:,})"
        summary.add_row("probe", accuracy, f"{probe.path} ({probe.examples:,}, {len(probe.classes)} labels), {how}")
    if report.anomalies is not None:
        anomalies = report.anomalies
        summary.add_row(
            "anomalies",
            f"AUROC {anomalies.auroc:.3f}",
            f"in {anomalies.in_path} ({anomalies.in_sentences:,}, mean score {anomalies.in_mean_score:.2f}) vs "
            f"out {anomalies.out_path} ({anomalies.out_sentences:,}, mean score {anomalies.out_mean_score:.2f})",
        )
    if summary.row_count:
        console.print(summary)
