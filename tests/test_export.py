"""textae.export.folder: the folder it writes, parity with torch on every model variant, refusals, int8."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import TINY_SENTENCES
from export_fixtures import VARIANTS, exported, make_run, run_fixture
from rich.console import Console

import textae.export.folder
from textae.training.checkpoint import load_model_from_run
from textae.errors import TextaeError
from textae.export.folder import export_model
from textae.manifest import FORMAT_VERSION, GRAPH_SIGNATURES, GRAPHS, MANIFEST_FILE, graph_file_name, sha256_file
from textae.runtime.model import TextAE
from textae.tokenizer import decode_batch, encode_batch

# Run fixtures whose exports are checked against torch; "trained_run" is skipped if conftest lacks it.
PARITY_RUNS = ["random_run", "trained_run"]
TOLERANCE = 1e-4


@pytest.fixture(scope="session", params=PARITY_RUNS + list(VARIANTS))
def parity_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, random_run: Path) -> tuple[Path, Path]:
    """(run folder, its export): the conftest runs (exported with int8 too) and small variants."""
    if request.param in PARITY_RUNS:
        run_dir = run_fixture(request, request.param)
        return run_dir, exported(tmp_path_factory, run_dir, quantize="int8")
    run_dir = make_run(tmp_path_factory.mktemp("variant") / request.param, random_run, **VARIANTS[request.param])
    return run_dir, exported(tmp_path_factory, run_dir)


@pytest.fixture(scope="session", params=PARITY_RUNS)
def int8_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported(tmp_path_factory, run_fixture(request, request.param), quantize="int8")


def one_token_sentences(runtime: TextAE) -> list[str]:
    words = sorted({word.strip(".") for sentence in TINY_SENTENCES for word in sentence.split()})
    single = [word for word, ids in zip(words, encode_batch(runtime.tokenizer, words, 64)) if len(ids) == 1]
    assert len(single) >= 3
    return single[:3]


def torch_reference(model, runtime: TextAE, sentences: list[str]) -> dict[str, np.ndarray | list[list[int]]]:
    """What the torch model computes for the same token ids, padded as one batch."""
    token_ids = encode_batch(runtime.tokenizer, sentences, model.config.max_length)
    lengths = torch.tensor([len(ids) for ids in token_ids])
    input_ids = torch.full((len(token_ids), max(1, int(lengths.max()))), model.config.pad_id)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        vectors, features = model.encode_with_features(input_ids, lengths)
        greedy = model.greedy_decode(vectors).tolist()
        scores = model.score(input_ids, lengths)
    eos = model.config.eos_id
    return {
        "vectors": vectors.numpy(),
        "features": features.numpy(),
        "scores": scores.numpy(),
        "greedy": [row[: row.index(eos)] if eos in row else row for row in greedy],
    }


def test_runtime_matches_torch(parity_case: tuple[Path, Path]) -> None:
    run_dir, folder = parity_case
    model, _ = load_model_from_run(run_dir)
    runtime = TextAE.load(folder, precision="fp32")
    # 40 sentences: batches of 33 leave a partial one; one-token and empty sentences; one truncated
    sentences = TINY_SENTENCES[:35] + one_token_sentences(runtime) + ["", " ".join(TINY_SENTENCES[:10])]
    reference = torch_reference(model, runtime, sentences)
    for batch_size in (1, 33):
        vectors = runtime.embed(sentences, batch_size=batch_size)
        np.testing.assert_allclose(vectors, reference["vectors"], atol=TOLERANCE, rtol=0)
        features = runtime.embed(sentences, batch_size=batch_size, output="features")
        assert features.shape == (len(sentences), runtime.feature_dim)
        np.testing.assert_allclose(features, reference["features"], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(runtime.score(sentences, batch_size=batch_size), reference["scores"], atol=TOLERANCE, rtol=0)
    for method in ("loop", "step"):
        assert runtime.greedy_ids(reference["vectors"], method=method) == reference["greedy"]
    assert runtime.reconstruct(sentences, batch_size=33) == decode_batch(runtime.tokenizer, reference["greedy"])


def test_graphs_have_dynamic_axes_and_the_manifest_describes_them(random_export: Path) -> None:
    manifest = json.loads((random_export / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2 and manifest["opset"] == 17
    assert manifest["training"]["run"] and manifest["special_tokens"]["eos_id"] == manifest["model"]["eos_id"]
    for graph in GRAPHS:
        entry = manifest["graphs"][graph]
        names = (tuple(t["name"] for t in entry["inputs"]), tuple(t["name"] for t in entry["outputs"]))
        assert names == GRAPH_SIGNATURES[graph]
        assert entry["files"] == {"fp32": f"{graph}.onnx", "int8": f"{graph}.int8.onnx"}
        proto = onnx.load(str(random_export / entry["files"]["fp32"]))
        assert [i.name for i in proto.graph.input] == [t["name"] for t in entry["inputs"]]
        for tensor, declared in zip(proto.graph.input, entry["inputs"]):
            dims = tensor.type.tensor_type.shape.dim
            for dim, want in zip(dims, declared["shape"]):
                # a fixed size where the manifest says "batch" would mean the export froze the example's size
                assert (dim.dim_param != "") if isinstance(want, str) else (dim.dim_value == want), (graph, tensor.name)
    for name, record in manifest["files"].items():
        assert sha256_file(random_export / name) == record["sha256"]
    assert sorted(manifest["files"]) == sorted(p.name for p in random_export.iterdir() if p.name != MANIFEST_FILE)


def test_greedy_decoding_is_one_loop_with_early_exit(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    proto = onnx.load(str(exported(tmp_path_factory, request.getfixturevalue("random_run"), "int8") / "decoder_greedy.onnx"))
    assert [node.op_type for node in proto.graph.node].count("Loop") == 1
    run_dir = run_fixture(request, "trained_run")  # an untrained model never says <eos>
    runtime = TextAE.load(exported(tmp_path_factory, run_dir, quantize="int8"), precision="fp32")
    ids = runtime.greedy_ids(runtime.embed(TINY_SENTENCES))
    assert max(map(len, ids)) < runtime.config.max_length  # the Loop stopped when every row had ended
    assert len(set(map(len, ids))) > 3
    exact = sum(a == b for a, b in zip(runtime.reconstruct(TINY_SENTENCES), TINY_SENTENCES))
    assert exact >= 0.95 * len(TINY_SENTENCES)


def test_export_that_fails_a_check_writes_nothing(random_run: Path, random_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "model"
    export_model(random_run, out_dir, console=Console(file=io.StringIO()))
    before = (out_dir / MANIFEST_FILE).read_bytes()
    encode = textae.export.folder._EncoderGraph.forward
    monkeypatch.setattr(textae.export.folder._EncoderGraph, "forward", lambda self, *args: tuple(t * 1.01 for t in encode(self, *args)))
    with pytest.raises(TextaeError, match=r"export check failed: encoder differs from torch by [0-9.e-]+ \(max abs"):
        export_model(random_run, out_dir, console=Console(file=io.StringIO()))
    assert (out_dir / MANIFEST_FILE).read_bytes() == before  # the previous export is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # and no partial folder is left beside it
    TextAE.load(out_dir)


def test_export_contains_exporter_warnings_and_replaces_an_old_export(random_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    console_text = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            report = export_model(random_run, tmp_path / "model", console=Console(file=console_text, width=200))
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr().err == ""  # the C++ side's warnings go to file descriptor 2
    assert "parity with torch" in console_text.getvalue() and "runtime loads fp32" in console_text.getvalue()
    assert report["precision"] == "fp32" and report["quantization"] is None
    assert report["parity"]["embedding_max_abs_diff"] <= TOLERANCE
    assert len(report["parity"]["batches"]) == 2  # a synthetic batch and one of real sentences
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_export_refuses_bad_options_and_foreign_folders(random_run: Path, tmp_path: Path) -> None:
    with pytest.raises(TextaeError, match="quantize must be one of int8"):
        export_model(random_run, tmp_path / "a", quantize="int4")
    with pytest.raises(TextaeError, match="opset must be"):
        export_model(random_run, tmp_path / "a", opset=9)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(TextaeError, match="not a textae export folder; refusing to overwrite"):
        export_model(random_run, tmp_path / "notes")
    with pytest.raises(TextaeError, match="run folder not found"):
        export_model(tmp_path / "missing", tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_int8_export_round_trip(int8_export: Path) -> None:
    folder = int8_export
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["precision"] == "int8"
    report = manifest["quantization"]
    assert report["min_cosine"] >= 0.99 and report["warning"] is None
    assert report["size_ratio"] < 0.5 and report["speed_ratio"] > 0
    fp32, int8 = TextAE.load(folder, precision="fp32"), TextAE.load(folder)
    assert int8.precision == "int8"
    a, b = fp32.embed(TINY_SENTENCES), int8.embed(TINY_SENTENCES)
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() >= 0.99
    assert len(int8.reconstruct(TINY_SENTENCES[:3])) == 3 and np.isfinite(int8.score(TINY_SENTENCES)).all()
    for graph in GRAPHS:
        assert (folder / graph_file_name(graph, "int8")).stat().st_size < (folder / graph_file_name(graph, "fp32")).stat().st_size


def test_int8_warns_when_vectors_drift(random_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textae.export.folder, "INT8_MIN_COSINE", 1.5)  # no cosine reaches it: the warning must show
    text = io.StringIO()
    report = export_model(random_run, tmp_path / "model", quantize="int8", console=Console(file=text, width=300))
    assert "below 1.5" in report["quantization"]["warning"]
    assert "warning:" in text.getvalue() and "min cosine" in text.getvalue()
    assert report["quantization"]["source"] == str(json.loads((random_run / "config.json").read_text())["train"]["corpus"][0])
