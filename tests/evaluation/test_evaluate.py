"""textae.evaluation: metrics against known answers, file readers' errors, and the four evaluations."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny import TINY_SENTENCES
from tokenizers import Tokenizer

from textae.errors import TextaeError
from textae.evaluation.anomalies import evaluate_anomalies
from textae.evaluation.evaluate import evaluate_model
from textae.evaluation.metrics import auroc, rankdata, row_cosines, spearman
from textae.evaluation.probes import evaluate_probe, probe_accuracy
from textae.evaluation.readers import read_labelled_file, read_sts_file
from textae.evaluation.reconstruction import evaluate_reconstruction
from textae.evaluation.similarity import evaluate_sts
from textae.runtime.model import TextAE
from textae.tokenizer import encode_batch, train_tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return train_tokenizer(TINY_SENTENCES, vocab_size=400)


class EchoModel:
    """Reconstructs a sentence's own token ids, minus the last one for sentences longer than
    drop_after tokens: a model whose reconstruction quality is known exactly."""

    def __init__(self, tokenizer: Tokenizer, drop_after: int) -> None:
        self.tokenizer = tokenizer
        self.drop_after = drop_after
        self.seen: list[str] = []

    def embed(self, sentences: Sequence[str], batch_size: int = 64, raw: bool = False) -> np.ndarray:
        start = len(self.seen)
        self.seen.extend(sentences)
        return np.arange(start, len(self.seen), dtype=np.float32)[:, None]  # the vector is the row

    def decode_ids(self, vectors: np.ndarray, beam_size: int = 1) -> list[list[int]]:
        ids = encode_batch(self.tokenizer, [self.seen[int(v[0])] for v in vectors], 1000)
        return [row[:-1] if len(row) > self.drop_after else row for row in ids]


class TableEmbedder:
    """Vectors looked up by sentence: lets a test build any geometry it needs."""

    def __init__(self, vectors: dict[str, Sequence[float]]) -> None:
        self.vectors = vectors
        self.calls: list[list[str]] = []

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        self.calls.append(list(sentences))
        return np.array([self.vectors[s] for s in sentences], dtype=np.float32)


class LengthScorer:
    """Anomaly score = sentence length: long sentences are 'unusual'."""

    def score(self, sentences: Sequence[str]) -> np.ndarray:
        return np.array([len(s) for s in sentences], dtype=np.float32)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- metrics -----------------------------------------------------------------------------------


def test_rankdata_averages_ties() -> None:
    np.testing.assert_array_equal(rankdata(np.array([10.0, 20.0, 20.0, 5.0, 20.0])), [2.0, 4.0, 4.0, 1.0, 4.0])


def test_spearman_known_answers() -> None:
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)  # any increasing function: perfect
    assert spearman(x, -x) == pytest.approx(-1.0)
    # ties: ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4); Pearson of those is 0.9486832980505138
    assert spearman(np.array([1.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.9486832980505138)
    assert np.isnan(spearman(np.ones(4), x[:4]))  # a constant side: undefined, not 0


def test_auroc_known_answers() -> None:
    assert auroc([0.1, 0.2, 0.3], [0.4, 0.5]) == 1.0
    assert auroc([0.4, 0.5], [0.1, 0.2, 0.3]) == 0.0
    assert auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5  # all tied: chance
    # pairs (neg, pos): (1,2) win, (3,2) loss, (1,3) win, (3,3) tie -> (2 + 0.5) / 4
    assert auroc([1.0, 3.0], [2.0, 3.0]) == pytest.approx(0.625)


def test_row_cosines_zero_vector_is_zero_similarity() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(row_cosines(a, b), [1.0, 0.0])


def test_probe_separates_a_separable_set() -> None:
    rng = np.random.default_rng(0)
    labels = ["pos"] * 40 + ["neg"] * 40
    features = rng.normal(size=(80, 5))
    features[:40, 0] += 6.0  # one informative axis, far apart
    accuracy, spread, folds = probe_accuracy(features, labels)
    assert (accuracy, spread, folds) == (100.0, 0.0, 10)
    # a class with fewer examples than folds lowers the fold count instead of failing
    _, _, folds = probe_accuracy(features[:46], labels[:46])
    assert folds == 6


# --- readers -----------------------------------------------------------------------------------


def test_sts_reader_skips_header_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "sts.tsv", "score\tsentence1\tsentence2\n4.5\ta b\tc d\n\n 1 \t e \tf\n")
    pairs = read_sts_file(path)
    np.testing.assert_array_equal(pairs.scores, [4.5, 1.0])
    assert pairs.first == ["a b", "e"] and pairs.second == ["c d", "f"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4.0\ta\tb\n3.0\tonly two\n", ":2: expected 3 tab-separated columns (score, sentence1, sentence2), found 2"),
        ("4.0\ta\tb\t\textra\n", ":1: expected 3 tab-separated columns"),
        ("4.0\ta\tb\nhigh\ta\tb\n", ":2: score 'high' is not a number"),
        ("nan\ta\tb\n", ":1: score 'nan' is not a finite number"),
        ("4.0\t\tb\n", ":1: the sentence1 column is empty"),
        ("", ": no sentence pairs (the file is empty)"),
        ("\n\n", ": no sentence pairs (the file is empty)"),
    ],
)
def test_sts_reader_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "sts.tsv", text)
    with pytest.raises(TextaeError) as error:
        read_sts_file(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_sts_reader_rejects_binary_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"4\ta\tb\n4\t\xff\tb\n")
    with pytest.raises(TextaeError, match=r"bad\.tsv:2: not valid UTF-8"):
        read_sts_file(path)
    with pytest.raises(TextaeError, match="no such file"):
        read_sts_file(tmp_path / "missing.tsv")


def test_labelled_reader_and_probe_label_errors(tmp_path: Path) -> None:
    data = read_labelled_file(write(tmp_path / "p.tsv", "label\ttext\nA\tx y\nB\tz\n"))
    assert (data.labels, data.texts, data.lines) == (["A", "B"], ["x y", "z"], [2, 3])
    embedder = TableEmbedder({"x": [1.0], "y": [2.0], "z": [3.0]})
    one_class = write(tmp_path / "one.tsv", "A\tx\nA\ty\n")
    with pytest.raises(TextaeError, match=r"one\.tsv: every example \(lines 1-2\) has label 'A'; a probe needs at least two labels"):
        evaluate_probe(embedder, one_class)
    singleton = write(tmp_path / "single.tsv", "A\tx\nA\ty\nB\tz\n")
    with pytest.raises(TextaeError, match=r"single\.tsv:3: label 'B' occurs only here"):
        evaluate_probe(embedder, singleton)
    unseen = write(tmp_path / "test.tsv", "A\tx\nC\tz\n")
    with pytest.raises(TextaeError, match=r"test\.tsv:2: label 'C' does not occur in the training file"):
        evaluate_probe(embedder, singleton, unseen)


# --- evaluations with stand-in models -----------------------------------------------------------


def test_sts_perfect_and_reversed_rankings(tmp_path: Path) -> None:
    # the second sentence of pair i sits at angle 0.3 * i from "base": similarity falls as i grows
    angles = {f"s{i}": 0.3 * i for i in range(5)}
    embedder = TableEmbedder({"base": [1.0, 0.0], **{k: [np.cos(a), np.sin(a)] for k, a in angles.items()}})
    lines = "".join(f"{5 - i}\tbase\ts{i}\n" for i in range(5))
    result = evaluate_sts(embedder, write(tmp_path / "sts.tsv", lines))
    assert (result.pairs, result.spearman) == (5, pytest.approx(100.0))
    assert len(embedder.calls[0]) == 6  # "base" repeated five times is embedded once
    reversed_lines = "".join(f"{i}\tbase\ts{i}\n" for i in range(5))
    assert evaluate_sts(embedder, write(tmp_path / "rev.tsv", reversed_lines)).spearman == pytest.approx(-100.0)
    with pytest.raises(TextaeError, match=r"flat\.tsv: Spearman correlation is undefined"):
        evaluate_sts(embedder, write(tmp_path / "flat.tsv", "".join(f"3\tbase\ts{i}\n" for i in range(5))))


def test_probe_with_fixed_test_file(tmp_path: Path) -> None:
    vectors = {f"p{i}": [1.0 + i % 3, 0.1 * i] for i in range(10)} | {f"n{i}": [-1.0 - i % 3, 0.1 * i] for i in range(10)}
    train = write(tmp_path / "train.tsv", "".join(f"{k[0]}\t{k}\n" for k in list(vectors)[::2]))
    test = write(tmp_path / "test.tsv", "".join(f"{k[0]}\t{k}\n" for k in list(vectors)[1::2]))
    result = evaluate_probe(TableEmbedder(vectors), train, test)
    assert (result.accuracy, result.folds, result.examples, result.test_examples, result.classes) == (100.0, 0, 10, 10, ["n", "p"])


def test_anomalies_auroc(tmp_path: Path) -> None:
    inside = write(tmp_path / "in.txt", "short\nsmall\n\n")
    outside = write(tmp_path / "out.txt", "a much longer line\nanother long sentence\n")
    result = evaluate_anomalies(LengthScorer(), inside, outside)
    assert (result.auroc, result.in_sentences, result.out_sentences) == (1.0, 2, 2)
    assert evaluate_anomalies(LengthScorer(), outside, inside).auroc == 0.0
    with pytest.raises(TextaeError, match=r"empty\.txt: no sentences \(the file is empty or blank\)"):
        evaluate_anomalies(LengthScorer(), inside, write(tmp_path / "empty.txt", "\n"))


def test_reconstruction_metrics_known_answers(tokenizer: Tokenizer, tmp_path: Path) -> None:
    sentences = ["the cat sat.", "the cat sat on the mat and the dog ran in the park."]  # 6 and 22 tokens
    short, long = (len(ids) for ids in encode_batch(tokenizer, sentences, 1000))
    assert short <= 10 < long
    result = evaluate_reconstruction(EchoModel(tokenizer, drop_after=10), write(tmp_path / "t.txt", "\n".join(sentences)), buckets=(10,))
    assert result.exact_match == 50.0
    assert result.token_accuracy == pytest.approx(100 * (short + long - 1) / (short + long))
    first, second = result.buckets
    assert (first.tokens, first.sentences, first.exact_match, first.chrf) == ("1-10", 1, 100.0, pytest.approx(100.0))
    assert (second.tokens, second.sentences, second.exact_match) == ("11+", 1, 0.0)
    assert second.token_accuracy == pytest.approx(100 * (long - 1) / long) and second.chrf < 100


# --- evaluations on a real export ---------------------------------------------------------------


def test_reconstruction_of_the_overfitted_corpus(trained_export: Path, tmp_path: Path) -> None:
    model = TextAE.load(trained_export)
    path = write(tmp_path / "text.txt", "\n".join(TINY_SENTENCES[:20]) + "\n")
    result = evaluate_reconstruction(model, path, buckets=(10,))
    assert (result.sentences, result.exact_match, result.token_accuracy, result.chrf) == (20, 100.0, 100.0, pytest.approx(100.0))
    assert [b.tokens for b in result.buckets] == ["1-10", "11+"]
    assert sum(b.sentences for b in result.buckets) == 20
    # a sentence longer than max_length cannot come back whole, and counts as not exact
    long_sentence = " ".join(TINY_SENTENCES[:12])  # about 90 tokens; max_length is 64
    result = evaluate_reconstruction(model, write(tmp_path / "long.txt", long_sentence + "\n"))
    assert result.exact_match == 0.0 and result.buckets[-1].tokens == "41+"


def test_evaluate_model_checks_every_input_first(random_export: Path, tmp_path: Path) -> None:
    model = TextAE.load(random_export)
    text = write(tmp_path / "text.txt", TINY_SENTENCES[0] + "\n")
    with pytest.raises(TextaeError, match="nothing to evaluate"):
        evaluate_model(model)
    with pytest.raises(TextaeError, match="--probe-test needs --probe"):
        evaluate_model(model, text=text, probe_test=text)
    with pytest.raises(TextaeError, match=r"missing\.tsv: no such file"):
        evaluate_model(model, text=text, sts=tmp_path / "missing.tsv")
    report = evaluate_model(model, text=text, anomalies=(text, text))
    assert set(report.to_dict()) == {"model", "reconstruction", "anomalies"}
    assert report.anomalies is not None and report.anomalies.auroc == 0.5


@pytest.mark.parametrize(("module", "option"), [("sacrebleu", "text"), ("sklearn", "probe")])
def test_missing_eval_extra_says_what_to_install(
    random_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, option: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    path = write(tmp_path / "data.tsv", "A\tx\nB\ty\n")
    with pytest.raises(TextaeError, match=r'pip install "textae\[eval\]"'):
        evaluate_model(TextAE.load(random_export), **{option: path})
