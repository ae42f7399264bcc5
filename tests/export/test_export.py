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
from helpers.exports import VARIANTS, exported, make_run, run_fixture
from helpers.tiny import TINY_SENTENCES
from rich.console import Console

import textae.export.graphs
import textae.export.quantize
from textae.errors import TextaeError
from textae.export.folder import export_model
from textae.manifest import FORMAT_VERSION, GRAPH_SIGNATURES, GRAPHS, MANIFEST_FILE, sha256_file
from textae.runtime.model import TextAE
from textae.tokenizer import decode_batch, encode_batch
from textae.training.checkpoint import load_model_from_run

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
        vectors = runtime.embed(sentences, batch_size=batch_size, raw=True)  # the graphs' own output
        np.testing.assert_allclose(vectors, reference["vectors"], atol=TOLERANCE, rtol=0)
        features = runtime.embed(sentences, batch_size=batch_size, output="features", raw=True)
        assert features.shape == (len(sentences), runtime.raw_feature_dim)
        np.testing.assert_allclose(features, reference["features"], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(runtime.score(sentences, batch_size=batch_size), reference["scores"], atol=TOLERANCE, rtol=0)
    for method in ("loop", "step"):
        assert runtime.greedy_ids(reference["vectors"], method=method) == reference["greedy"]
    assert runtime.reconstruct(sentences, batch_size=33) == decode_batch(runtime.tokenizer, reference["greedy"])


def test_default_features_are_the_vector_and_the_token_embeddings_pools_in_every_precision(random_export: Path) -> None:
    """feature_source "vector+tokens": what embed(output="features") returns is the sentence vector
    beside the mean, max and min of the encoder's own embedding table's rows; int8 reads that fp32
    table too (no product to quantize), and its own int8 sentence vector."""
    from onnx import numpy_helper

    fp32, int8 = TextAE.load(random_export, precision="fp32"), TextAE.load(random_export, precision="int8")
    config = fp32.config
    assert config.feature_source == "vector+tokens" and fp32.raw_feature_dim == config.latent_dim + 3 * config.embedding_dim
    graph = onnx.load(str(random_export / "encoder.onnx"))
    tables = [numpy_helper.to_array(t) for t in graph.graph.initializer if list(t.dims) == [config.vocab_size, config.embedding_dim]]
    assert len(tables) == 1
    sentences = TINY_SENTENCES[:7] + [""]
    rows = [ids or [config.pad_id] for ids in fp32.tokenize(sentences)]  # an empty sentence reads one <pad>
    pools = np.stack([np.concatenate([tables[0][ids].mean(0), tables[0][ids].max(0), tables[0][ids].min(0)]) for ids in rows])
    for model in (fp32, int8):
        for batch_size in (1, 5):
            got = model.embed(sentences, output="features", raw=True, batch_size=batch_size)
            vectors = model.embed(sentences, raw=True, batch_size=batch_size)
            np.testing.assert_allclose(got, np.concatenate([vectors, pools], axis=1), atol=1e-5, rtol=0)


def test_graphs_have_dynamic_axes_and_the_manifest_describes_them(random_export: Path) -> None:
    manifest = json.loads((random_export / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2 and manifest["opset"] == 17
    assert manifest["training"]["run"] and manifest["special_tokens"]["eos_id"] == manifest["model"]["eos_id"]
    for graph in GRAPHS:
        entry = manifest["graphs"][graph]
        names = (tuple(t["name"] for t in entry["inputs"]), tuple(t["name"] for t in entry["outputs"]))
        assert names == GRAPH_SIGNATURES[graph]
        assert entry["files"] == {"fp32": f"{graph}.onnx", "int8": f"{graph}.int8.onnx"}
        proto = onnx.load(str(random_export / entry["files"]["fp32"]), load_external_data=False)
        assert [i.name for i in proto.graph.input] == [t["name"] for t in entry["inputs"]]
        for tensor, declared in zip(proto.graph.input, entry["inputs"]):
            dims = tensor.type.tensor_type.shape.dim
            for dim, want in zip(dims, declared["shape"]):
                # a fixed size where the manifest says "batch" would mean the export froze the example's size
                assert (dim.dim_param != "") if isinstance(want, str) else (dim.dim_value == want), (graph, tensor.name)
    for name, record in manifest["files"].items():
        assert sha256_file(random_export / name) == record["sha256"]
    assert sorted(manifest["files"]) == sorted(p.name for p in random_export.iterdir() if p.name != MANIFEST_FILE)


def test_the_folder_is_lean_one_shared_weights_file_and_no_stored_table(random_run: Path, tmp_path: Path) -> None:
    report = export_model(random_run, tmp_path / "model", console=Console(file=io.StringIO()))
    folder = tmp_path / "model"
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["tables"] == {"token_gates": {"file": "decoder_tables.onnx", "used_by": ["decoder_greedy", "decoder_step"]}}
    assert {"weights.bin", "decoder_tables.onnx"} <= set(manifest["files"])  # checksummed like every file
    # every weight lives once in weights.bin: the graph files hold structure only
    assert all(path.stat().st_size < 100_000 for path in folder.glob("*.onnx"))
    model_bytes = report["model_bytes"]
    assert report["weights_bytes"]["fp32"] <= 2 * model_bytes and report["weights_bytes"]["int8"] <= 0.6 * model_bytes
    # the table the greedy graphs gather from is computed at load, not stored: (V, G*H) floats would not fit
    config = manifest["model"]
    table_bytes = config["vocab_size"] * 4 * config["hidden_size"] * 4
    assert (folder / "weights.bin").stat().st_size < sum(report["weights_bytes"].values()) + table_bytes
    for precision in ("fp32", "int8"):
        runtime = TextAE.load(folder, precision=precision)
        vectors = runtime.embed(TINY_SENTENCES[:5], raw=True)
        assert runtime.greedy_ids(vectors, method="loop") == runtime.greedy_ids(vectors, method="step")


def test_the_fp32_encoder_stops_at_the_longest_row_so_padding_is_free(random_export: Path) -> None:
    # The recurrent op gets sequence_lens: onnxruntime then runs only max(lengths) steps, which is
    # what makes a server's bucketed widths cost nothing (26 -> 3 ms for 6 tokens padded to 64).
    proto = onnx.load(str(random_export / "encoder.onnx"), load_external_data=False)
    recurrent = [node for node in proto.graph.node if node.op_type in ("LSTM", "GRU", "RNN")]
    assert recurrent and all(len(node.input) > 4 and node.input[4] for node in recurrent)
    # the per-row int8 encoder likewise cuts the columns past max(lengths) before its Scan
    int8_encoder = onnx.load(str(random_export / "encoder.int8.onnx"), load_external_data=False)
    assert [node.op_type for node in int8_encoder.graph.node].count("Scan") == 1
    producers = {output: node for node in int8_encoder.graph.node for output in node.output}
    (cut,) = [node for node in int8_encoder.graph.node if node.op_type == "Slice" and node.input[0] == "input_ids"]
    steps = producers[producers[cut.input[2]].input[0]]  # Unsqueeze(Min(max(lengths), width))
    assert steps.op_type == "Min" and producers[producers[steps.input[0]].input[0]].input == ["lengths"]
    for precision in ("fp32", "int8"):
        runtime = TextAE.load(random_export, precision=precision)
        token_ids = runtime.tokenize(TINY_SENTENCES[:6])
        narrow = runtime.embed_ids(token_ids)
        for width in (16, 64):
            np.testing.assert_allclose(runtime.embed_ids(token_ids, width=width), narrow, atol=1e-6, rtol=0)


def test_a_damaged_weights_file_is_refused(random_export: Path, tmp_path: Path) -> None:
    from helpers.exports import copy_export

    folder = copy_export(random_export, tmp_path / "copy")
    data = bytearray((folder / "weights.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(TextaeError, match=r"weights.bin: sha256 does not match"):
        TextAE.load(folder)


def test_greedy_decoding_is_one_loop_with_early_exit(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    proto = onnx.load(str(exported(tmp_path_factory, request.getfixturevalue("random_run"), "int8") / "decoder_greedy.onnx"), load_external_data=False)
    assert [node.op_type for node in proto.graph.node].count("Loop") == 1
    run_dir = run_fixture(request, "trained_run")  # an untrained model never says <eos>
    runtime = TextAE.load(exported(tmp_path_factory, run_dir, quantize="int8"), precision="fp32")
    ids = runtime.greedy_ids(runtime.embed(TINY_SENTENCES, raw=True))
    assert max(map(len, ids)) < runtime.config.max_length  # the Loop stopped when every row had ended
    assert len(set(map(len, ids))) > 3
    exact = sum(a == b for a, b in zip(runtime.reconstruct(TINY_SENTENCES), TINY_SENTENCES))
    assert exact >= 0.95 * len(TINY_SENTENCES)


def test_export_that_fails_a_check_writes_nothing(random_run: Path, random_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "model"
    export_model(random_run, out_dir, quantize="none", console=Console(file=io.StringIO()))
    before = (out_dir / MANIFEST_FILE).read_bytes()
    encode = textae.export.graphs.EncoderGraph.forward
    monkeypatch.setattr(textae.export.graphs.EncoderGraph, "forward", lambda self, *args: tuple(t * 1.01 for t in encode(self, *args)))
    with pytest.raises(TextaeError, match=r"export check failed: encoder differs from torch by [0-9.e-]+ \(max abs"):
        export_model(random_run, out_dir, quantize="none", console=Console(file=io.StringIO()))
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
    assert "parity with torch" in console_text.getvalue() and "runtime loads " in console_text.getvalue()
    # the default writes int8 too; an untrained model's near-tied logits fail the text gate, and it says
    # why; the embed job is decided by its own figures, whatever text's verdict
    quantization = report["quantization"]
    assert quantization["jobs"]["text"]["precision"] == "fp32" and report["job_precisions"]["text"] == "fp32"
    assert "text stays fp32: greedy reconstructions" in console_text.getvalue()
    embed_passes = quantization["min_cosine"] >= 0.999 and quantization["features_min_cosine"] >= 0.999 and quantization["batch_invariant"]
    assert report["job_precisions"]["embed"] == ("int8" if embed_passes else "fp32")
    assert report["precision"] == "fp32" == quantization["default"]  # int8 for everything only where both jobs passed
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
    report = manifest["quantization"]
    assert manifest["precision"] == report["default"]
    assert report["min_cosine"] >= 0.999 and report["batch_invariant"] is True
    assert report["size_ratio"] < 0.5
    fp32, int8 = TextAE.load(folder, precision="fp32"), TextAE.load(folder, precision="int8")
    a, b = fp32.embed(TINY_SENTENCES, raw=True), int8.embed(TINY_SENTENCES, raw=True)
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() >= 0.99
    assert len(int8.reconstruct(TINY_SENTENCES[:3])) == 3 and np.isfinite(int8.score(TINY_SENTENCES)).all()


def test_trained_model_passes_the_int8_gate_and_loads_int8_by_default(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> None:
    folder = exported(tmp_path_factory, trained_run, quantize="int8")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    report = manifest["quantization"]
    assert report["greedy_agreement"] >= 0.95 and report["min_cosine"] >= 0.999 and report["warning"] is None
    assert manifest["precision"] == "int8" and manifest["job_precisions"] == {"embed": "int8", "text": "int8"}
    assert TextAE.load(folder).precisions == {"embed": "int8", "text": "int8"} and TextAE.load(folder).precision == "int8"


def test_int8_vectors_are_batch_invariant(int8_export: Path) -> None:
    """A sentence's int8 vector is the same alone and in any batch (per-row activation scales)."""
    int8 = TextAE.load(int8_export, precision="int8")
    sentences = TINY_SENTENCES + ["", " ".join(TINY_SENTENCES[:10])]
    together = int8.embed(sentences, batch_size=len(sentences), raw=True)
    for batch_size in (1, 7):
        assert np.abs(int8.embed(sentences, batch_size=batch_size, raw=True) - together).max() <= 1e-5
    scores = int8.score(sentences, batch_size=len(sentences))
    assert np.abs(np.concatenate([int8.score([s]) for s in sentences]) - scores).max() <= 1e-5


ROW_QUANT_VARIANTS = {
    "lstm": {},
    "lstm-forward-input": {"reverse_input": False},
    "rnn-2layers-max": {"cell": "rnn", "num_layers": 2, "pooling": "max", "feature_source": "states"},
    "gru-mean": {"cell": "gru", "pooling": "mean", "feature_source": "states+tokens"},
    "lstm-narrow-hidden-max": {"embedding_dim": 40, "hidden_size": 12, "pooling": "max"},
}


@pytest.mark.parametrize("variant", list(ROW_QUANT_VARIANTS))
def test_row_quantized_encoder_runs_the_integer_maths_of_its_torch_twin(variant: str) -> None:
    """The int8 graph computes exactly what its float32 emulation computes, and stays near fp32."""
    import onnxruntime as ort

    from textae.config import ModelConfig
    from textae.export import rowquant
    from textae.export.graphs import graph_shapes
    from textae.training.model import Autoencoder

    settings = {"vocab_size": 400, "embedding_dim": 24, "hidden_size": 32, "latent_dim": 16, "max_length": 24}
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(**{**settings, **ROW_QUANT_VARIANTS[variant]})).eval()
    assert rowquant.supports_row_quantization(model)
    proto = rowquant.row_quantized_encoder(model, graph_shapes(model.config), 17)
    ops = {node.op_type for node in proto.graph.node} | {n.op_type for node in proto.graph.node for a in node.attribute if a.g for n in a.g.node}
    assert "MatMulIntegerToFloat" in ops and not {"LSTM", "GRU", "RNN"} & ops
    lengths = torch.tensor([9, 5, 1, 0])
    input_ids = torch.randint(4, model.config.vocab_size, (4, 9), generator=torch.Generator().manual_seed(0))
    input_ids = input_ids.masked_fill(torch.arange(9) >= lengths.unsqueeze(1), model.config.pad_id)
    with torch.no_grad():
        prologue, step, epilogue = rowquant._Prologue(model), rowquant._Step(model), rowquant._Epilogue(model)
        gates, h, *token_pools = prologue(input_ids, lengths)
        c, outputs = h, []
        for t in range(gates.size(0)):
            h, c, top = step(gates[t], h, c)
            outputs.append(top)
        emulated, emulated_features = (t.numpy() for t in epilogue(torch.stack(outputs), lengths, *token_pools))
        fp32, fp32_features = (t.numpy() for t in model.encode_with_features(input_ids, lengths))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["sentence_embedding", "features"]
    got, got_features = session.run(None, {"input_ids": input_ids.numpy(), "lengths": lengths.numpy()})
    assert np.abs(got - emulated).max() <= 1e-5 and np.abs(got_features - emulated_features).max() <= 1e-5
    for int8, exact in ((got, fp32), (got_features, fp32_features)):  # the features from the same int8 states
        # the token pools of an empty sentence are its <pad> row, all zeros, in both
        zero = np.linalg.norm(exact, axis=1) == 0
        assert np.all(int8[zero] == 0)
        int8, exact = int8[~zero], exact[~zero]
        cosines = (int8 * exact).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(exact, axis=1)
        assert cosines.min() >= 0.999


def test_bidirectional_encoders_fall_back_to_static_int8() -> None:
    from textae.config import ModelConfig
    from textae.export import rowquant
    from textae.training.model import Autoencoder

    config = ModelConfig(vocab_size=400, embedding_dim=24, hidden_size=32, latent_dim=16, bidirectional=True)
    assert not rowquant.supports_row_quantization(Autoencoder(config))


def test_int8_gate_falls_back_to_fp32_with_the_reason(random_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textae.export.quantize, "GATE_MIN_COSINE", 1.5)  # no cosine reaches it
    text = io.StringIO()
    report = export_model(random_run, tmp_path / "model", quantize="int8", console=Console(file=text, width=300))
    assert "embed stays fp32: minimum cosine to fp32" in report["quantization"]["warning"] and "< 1.5" in report["quantization"]["warning"]
    assert report["quantization"]["jobs"]["embed"]["precision"] == "fp32" and "(gate 1.5)" in report["quantization"]["jobs"]["embed"]["figures"]
    assert report["precision"] == "fp32" and TextAE.load(tmp_path / "model").precisions["embed"] == "fp32"
    assert "warning:" in text.getvalue() and "min cosine" in text.getvalue() and "batch-invariant" in text.getvalue()
    assert report["quantization"]["source"] == str(json.loads((random_run / "config.json").read_text())["train"]["corpus"][0])


def test_quantize_none_writes_fp32_only(random_run: Path, tmp_path: Path) -> None:
    report = export_model(random_run, tmp_path / "model", quantize="none", console=Console(file=io.StringIO()))
    assert report["quantization"] is None and report["precision"] == "fp32"
    assert not list((tmp_path / "model").glob("*.int8.onnx"))
