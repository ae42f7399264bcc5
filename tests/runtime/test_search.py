"""textae.runtime.search: exact cosine top-k, the index file round trip, and its refusal of other models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.tiny import TINY_SENTENCES

from textae.batching import unit_rows
from textae.errors import TextaeError
from textae.runtime.model import TextAE
from textae.runtime.search import VectorIndex, open_corpus, similar_sentences, top_k_cosine


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TINY_SENTENCES[:12]) + "\n", encoding="utf-8")
    return path


def test_top_k_cosine_orders_by_similarity_then_row() -> None:
    corpus = unit_rows(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [-1.0, 0.0]]))
    indices, scores = top_k_cosine(corpus, unit_rows(np.array([[3.0, 0.0], [0.0, -1.0]])), k=3)
    # rows 0 and 3 point the same way: a tie, broken by row number
    np.testing.assert_array_equal(indices[0], [0, 3, 2])
    np.testing.assert_allclose(scores[0], [1.0, 1.0, np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_array_equal(indices[1], [0, 3, 4])  # all three are orthogonal: cosine 0
    all_rows, _ = top_k_cosine(corpus, corpus[:1], k=50)  # k beyond N: every row, ranked
    np.testing.assert_array_equal(all_rows[0], [0, 3, 2, 1, 4])
    with pytest.raises(TextaeError, match="positive"):
        top_k_cosine(corpus, corpus, k=0)


def test_top_k_matches_full_sort_across_query_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import textae.runtime.search

    monkeypatch.setattr(textae.runtime.search, "SCORE_BLOCK", 500)  # forces many blocks of queries
    rng = np.random.default_rng(0)
    corpus, queries = unit_rows(rng.normal(size=(200, 8))), unit_rows(rng.normal(size=(7, 8)))
    indices, scores = top_k_cosine(corpus, queries, k=5)
    expected = np.argsort(-(queries @ corpus.T), axis=1)[:, :5]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ corpus.T, expected, axis=1), rtol=1e-6)


def test_index_round_trip_and_search(random_export: Path, corpus_file: Path, tmp_path: Path) -> None:
    model = TextAE.load(random_export, precision="fp32")
    built = VectorIndex.build(model, corpus_file)
    path = tmp_path / "index.npz"
    built.save(path)
    loaded = open_corpus(model, path)
    assert loaded.texts == TINY_SENTENCES[:12] and loaded.source == str(corpus_file) and len(loaded.source_sha256) == 64
    np.testing.assert_array_equal(loaded.vectors, built.vectors)
    np.testing.assert_allclose(np.linalg.norm(loaded.vectors, axis=1), 1.0, rtol=1e-5)
    # a sentence of the corpus is its own nearest neighbour, at cosine 1
    (neighbours,) = similar_sentences(model, path, [TINY_SENTENCES[3]], top_k=3)
    assert neighbours[0].index == 3 and neighbours[0].text == TINY_SENTENCES[3]
    assert neighbours[0].score == pytest.approx(1.0, abs=1e-5)
    assert [n.score for n in neighbours] == sorted((n.score for n in neighbours), reverse=True)
    # the same results straight from the text file
    (direct,) = similar_sentences(model, corpus_file, [TINY_SENTENCES[3]], top_k=3)
    assert [n.index for n in direct] == [n.index for n in neighbours]


def test_index_refuses_another_model_and_bad_files(random_export: Path, corpus_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "index.npz"
    VectorIndex.build(TextAE.load(random_export, precision="fp32"), corpus_file).save(path)
    with pytest.raises(TextaeError, match=r"index\.npz: index was built with a different model or precision"):
        open_corpus(TextAE.load(random_export, precision="int8"), path)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(TextaeError, match=r"broken\.npz: not a textae index"):
        VectorIndex.load(broken)
    with pytest.raises(TextaeError, match=r"must end in \.npz"):
        VectorIndex.build(TextAE.load(random_export), corpus_file).save(tmp_path / "index.bin")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(TextaeError, match=r"empty\.txt: no sentences"):
        VectorIndex.build(TextAE.load(random_export), empty)
