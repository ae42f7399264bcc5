"""Linear probes: accuracy of a logistic regression on frozen sentence vectors (SentEval's protocol).

Percentages (0-100). scikit-learn comes from the `eval` extra and is imported only when used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textae.errors import TextaeError
from textae.evaluation.readers import LabelledTexts, read_labelled_file
from textae.evaluation.similarity import Embedder, embed_unique
from textae.extras import import_optional

PROBE_FOLDS = 10


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
