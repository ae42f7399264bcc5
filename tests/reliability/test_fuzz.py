"""Property tests over hostile text and vectors for the runtime and the corpus reader (hypothesis).

CI runs a bounded number of examples per property (the "ci" profile); the benchmark mode
(`python benchmarks/bench_fuzz.py`, or TEXTAE_FUZZ_EXAMPLES=10000) runs many more and reports counts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textae.corpus import iter_corpus
from textae.errors import TextaeError
from textae.runtime.model import TextAE

EXAMPLES = int(os.environ.get("TEXTAE_FUZZ_EXAMPLES", "50"))
settings.register_profile(
    "textae", max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 50,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
settings.load_profile("textae")
FUZZ = settings(settings.get_profile("textae"))

# the characters that break naive text handling, mixed into arbitrary Unicode
NASTY = [
    "\x00", "\x07", "\x1b", "\r", "\n", "\t", "\x85", "\u2028", "\u2029",  # control and line breaks
    "\ud800", "\udfff", "\udbff",  # lone surrogates (json.loads and surrogateescape make them)
    "\u200b", "\u200c", "\u200d", "\ufeff", "\u2060",  # zero-width
    "\u200e", "\u200f", "\u202e", "\u2066",  # direction marks and overrides
    "\U0001f600", "\U0001f469\u200d\U0001f4bb", "\U0001f1fa\U0001f1f8",  # emoji, ZWJ sequence, flag
    "e\u0301", "a" + "\u0300" * 50, "\ufffd", "\U0010ffff",  # combining sequences, replacement, last code point
]
# arbitrary Unicode (any category but surrogates) with the nasty pieces spliced in
text = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(NASTY)), max_size=25).map("".join)
sentence = st.one_of(
    text,
    st.sampled_from(["", " ", "\t\n ", "\u3000", "." * 300]),
    st.builds(lambda unit, n: unit * n, st.sampled_from(["a", "ab ", "\U0001f600", "\ud800"]), st.integers(1000, 100_000)),
)
sentences = st.lists(sentence, min_size=1, max_size=8)


@pytest.fixture(scope="module")
def model(random_export: Path) -> TextAE:
    return TextAE.load(random_export, precision="fp32", num_threads=1)


@FUZZ
@given(batch=sentences, data=st.data())
def test_embed_is_finite_and_independent_of_the_batch(model: TextAE, batch: list[str], data: st.DataObject) -> None:
    vectors = model.embed(batch)
    assert vectors.shape == (len(batch), model.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    index = data.draw(st.integers(0, len(batch) - 1))
    alone = model.embed([batch[index]])[0]
    assert np.abs(alone - vectors[index]).max() <= 1e-5
    shuffled = data.draw(st.permutations(range(len(batch))))
    again = model.embed([batch[i] for i in shuffled], batch_size=data.draw(st.integers(1, 4)))
    assert np.abs(again - vectors[list(shuffled)]).max() <= 1e-5
    assert np.array_equal(model.embed(batch), vectors)  # the same input, the same output


@FUZZ
@given(batch=sentences)
def test_score_is_finite_per_sentence_and_repeatable(model: TextAE, batch: list[str]) -> None:
    scores = model.score(batch)
    assert scores.shape == (len(batch),) and np.isfinite(scores).all() and (scores >= 0).all()
    assert np.abs(model.score(batch[:1]) - scores[:1]).max() <= 1e-5
    assert np.array_equal(model.score(batch), scores)


@FUZZ
@given(batch=sentences)
def test_reconstruct_gives_one_string_per_sentence(model: TextAE, batch: list[str]) -> None:
    texts = model.reconstruct(batch, max_length=8)
    assert len(texts) == len(batch) and all(isinstance(text, str) for text in texts)
    assert texts[:1] == model.reconstruct(batch[:1], max_length=8)
    for text in texts:
        text.encode("utf-8")  # printable and writable: no lone surrogates come back


# subnormals come from the sampled extremes: training sets flush-to-zero for the whole process, and
# hypothesis refuses to generate subnormal floats under it
finite = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)
extreme = st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38, 1e30, -1e30, 1e6])


@FUZZ
@given(data=st.data(), rows=st.integers(1, 4))
def test_decode_takes_any_finite_vector_and_refuses_nan_and_infinity(model: TextAE, data: st.DataObject, rows: int) -> None:
    values = data.draw(st.lists(st.one_of(finite, extreme), min_size=rows * model.raw_dim, max_size=rows * model.raw_dim))
    vectors = np.array(values, dtype=np.float32).reshape(rows, model.raw_dim)
    texts = model.decode(vectors, max_length=8, raw=True)
    assert len(texts) == rows and texts == model.decode(vectors, max_length=8, raw=True)
    assert texts[:1] == model.decode(vectors[:1], max_length=8, raw=True)
    bad = vectors.copy()
    bad.flat[data.draw(st.integers(0, bad.size - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with pytest.raises(TextaeError, match="NaN or infinity"):
        model.decode(bad, raw=True)
    with pytest.raises(TextaeError, match="NaN or infinity"):
        model.decode(bad)  # embed's default vectors: refused before the whitening is undone


@FUZZ
@given(content=st.one_of(st.binary(max_size=2000), text.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_the_corpus_reader_reads_or_refuses_any_bytes(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "corpus.txt"
    path.write_bytes(content)
    try:
        lines = list(iter_corpus([path]))
    except TextaeError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert all(line and line == line.strip() and "\n" not in line for line in lines)
    for line in lines:
        line.encode("utf-8")  # valid text: what the tokenizer trains on
