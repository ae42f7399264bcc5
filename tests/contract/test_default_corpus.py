"""Fast checks for the shipped default corpus and the script that rebuilds it."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

from helpers.paths import ROOT

# the builder is a tool of ours, not part of the package: users never import it
sys.path.insert(0, str(ROOT / "tools"))
from build_default_corpus import (
    build_default_corpus,
    is_clean_sentence,
    iter_python_doc_sentences,
    split_sentences,
    strip_inline_markup,
)

SHIPPED = ROOT / "corpora" / "python-docs.txt"
MARKUP = re.compile(r"[|{}=`]|::|>>>")


def _assert_clean(sentence: str) -> None:
    words = sentence.split()
    assert 4 <= len(words) <= 40, sentence
    assert sentence[0].isupper(), sentence
    assert sentence[-1] in ".?!", sentence
    assert not MARKUP.search(sentence), sentence
    letters = sum(c.isalpha() or c.isspace() for c in sentence)
    assert letters >= 0.7 * len(sentence), sentence


def test_iter_yields_clean_unique_sentences() -> None:
    # The generator is lazy and the help topics come first, so a prefix is cheap.
    sentences = list(itertools.islice(iter_python_doc_sentences(), 500))
    assert len(sentences) == 500
    assert len(set(sentences)) == len(sentences)
    for sentence in sentences:
        _assert_clean(sentence)


def test_splitter_and_filters() -> None:
    assert strip_inline_markup("Use ``len(x)`` or :func:`~os.path.join` and *this*.") == (
        "Use len(x) or join and this."
    )
    assert split_sentences("It works, e.g. Here. Next one\nis here! Done?") == [
        "It works, e.g. Here.",
        "Next one is here!",
        "Done?",
    ]
    assert is_clean_sentence("Return the number of items in a container.")
    for junk in (
        "x = compute(a, b) + 1.",  # code
        "too short.",  # lowercase, too short
        "See the os.path module for details.",  # dotted identifier
        "Set the value of the option with this method",  # no terminal punctuation
        "The ``value`` is returned unchanged here.",  # leftover markup
    ):
        assert not is_clean_sentence(junk), junk


def test_build_writes_atomically(tmp_path: Path) -> None:
    out = tmp_path / "c.txt"
    count = build_default_corpus(out, max_sentences=200)
    assert count == 200
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200
    assert len(set(lines)) == 200
    assert not out.with_suffix(".tmp").exists()
    assert list(tmp_path.iterdir()) == [out]


def test_shipped_corpus_is_well_formed() -> None:
    assert SHIPPED.is_file()
    data = SHIPPED.read_bytes()
    text = data.decode("utf-8")  # raises if not UTF-8
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) >= 10_000
    assert all(line.strip() for line in lines), "empty line in shipped corpus"
    assert len(set(lines)) == len(lines), "duplicate line in shipped corpus"
    assert all(line == line.strip() for line in lines)
