"""The evaluation input files: UTF-8, blank lines skipped, an optional header line naming the columns.

    --text         one sentence a line
    --sts          score<TAB>sentence1<TAB>sentence2
    --probe        label<TAB>text
    --anomalies    two plain text files: in-domain, out-of-domain

A malformed line is a TextaeError naming the file and the line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textae.corpus import check_readable_file, iter_numbered_lines
from textae.errors import TextaeError
from textae.runtime.files import read_sentences


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
