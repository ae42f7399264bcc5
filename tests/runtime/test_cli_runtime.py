"""The CLI's export and runtime commands: export, embed, reconstruct, score, info."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.blocked_imports import run_cli
from helpers.exports import copy_export
from helpers.tiny import TINY_SENTENCES

from textae.runtime.model import TextAE

Cli = Callable[..., tuple[int, str, str]]

@pytest.fixture
def sentences_file(tmp_path: Path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(TINY_SENTENCES[:6]) + "\n\n", encoding="utf-8")  # the empty line is skipped
    return path


def test_runtime_commands_work_without_torch(random_export: Path, sentences_file: Path, tmp_path: Path) -> None:
    model = str(random_export)
    commands = [
        ["info", model],
        ["embed", model, str(sentences_file), "--out", str(tmp_path / "vectors.npy")],
        ["embed", model, "-", "--out", str(tmp_path / "vectors.jsonl"), "--precision", "fp32"],
        ["reconstruct", model, TINY_SENTENCES[0], TINY_SENTENCES[1]],
        ["reconstruct", model, "--file", str(sentences_file)],
        ["score", model, str(sentences_file), "--top", "2"],
        ["score", model, str(sentences_file), "--flag-percentile", "50"],
        ["generate", model, "-n", "3", "--seed", "0"],
        ["embed", model, str(sentences_file), "--out", str(tmp_path / "features.jsonl"), "--output", "features", "--precision", "fp32"],
    ]
    report = run_cli(commands, stdin=sentences_file.read_text())
    assert report.loaded == []
    results = report.results
    assert [r["code"] for r in results] == [0] * len(commands), results
    info, embed_npy, _embed_jsonl, reconstruct_args, reconstruct_file, score, flagged, generated, _features = results
    # each job's default precision is the one the export's int8 gate chose for it
    precisions = TextAE.load(random_export).precisions
    shown = " ".join(info["out"].split())  # rich wraps long rows
    assert "sha256 verified" in shown and f"runtime loads {precisions['embed']} to embed, {precisions['text']} to text" in shown
    runtime = TextAE.load(random_export)
    np.testing.assert_allclose(np.load(tmp_path / "vectors.npy"), runtime.embed(TINY_SENTENCES[:6]), atol=1e-6, rtol=0)
    lines = [json.loads(line) for line in (tmp_path / "vectors.jsonl").read_text().splitlines()]
    assert [line["text"] for line in lines] == TINY_SENTENCES[:6]
    fp32 = TextAE.load(random_export, precision="fp32").embed(TINY_SENTENCES[:6])
    np.testing.assert_allclose([line["sentence_embedding"] for line in lines], fp32, atol=1e-6, rtol=0)
    assert "embedded 6 sentences" in embed_npy["err"]
    assert reconstruct_args["out"].splitlines() == runtime.reconstruct(TINY_SENTENCES[:2])
    assert len(reconstruct_file["out"].splitlines()) == 6
    assert len(score["out"].splitlines()) == 2
    assert "50th percentile" in flagged["err"] and 0 < len(flagged["out"].splitlines()) <= 6
    assert generated["out"].splitlines() == runtime.generate(3, seed=0)
    rows = [json.loads(line) for line in (tmp_path / "features.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([row["features"] for row in rows], fp32_features(random_export), atol=1e-6, rtol=0)


def fp32_features(export: Path) -> np.ndarray:
    return TextAE.load(export, precision="fp32").embed(TINY_SENTENCES[:6], output="features")


def test_embed_writes_features_when_asked(random_export: Path, sentences_file: Path, tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("embed", random_export, sentences_file, "--out", tmp_path / "f.npy", "--output", "features", "--precision", "fp32")
    assert code == 0, err
    features = np.load(tmp_path / "f.npy")
    assert features.shape == (6, TextAE.load(random_export).feature_dim)
    np.testing.assert_allclose(features, fp32_features(random_export), atol=1e-6, rtol=0)


def test_score_prints_all_or_flags_top_and_threshold(random_export: Path, sentences_file: Path, cli: Cli) -> None:
    code, out, _ = cli("score", random_export, sentences_file)
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [row[0] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [row[2] for row in rows] == TINY_SENTENCES[:6]
    scores = [float(row[1]) for row in rows]
    code, out, _ = cli("score", random_export, sentences_file, "--top", 2)
    top = [line.split("\t") for line in out.splitlines()]
    assert [float(row[1]) for row in top] == sorted(scores, reverse=True)[:2]
    threshold = (sorted(scores)[2] + sorted(scores)[3]) / 2  # between two printed (rounded) scores
    code, out, _ = cli("score", random_export, sentences_file, "--threshold", threshold)
    assert [int(line.split("\t")[0]) for line in out.splitlines()] == [i + 1 for i, s in enumerate(scores) if s >= threshold]


def test_embed_large_input_in_chunks(random_export: Path, tmp_path: Path, cli: Cli) -> None:
    lines = [f"{sentence} {i}" for i, sentence in enumerate(TINY_SENTENCES * 50)][:2100]
    (tmp_path / "big.txt").write_text("\n".join(lines) + "\n")
    code, _, err = cli("embed", random_export, tmp_path / "big.txt", "--out", tmp_path / "big.npy", "--batch-size", 128, "--precision", "fp32")
    assert code == 0, err
    vectors = np.load(tmp_path / "big.npy")
    assert vectors.shape == (2100, 24)
    np.testing.assert_allclose(vectors[2000:], TextAE.load(random_export, precision="fp32").embed(lines[2000:]), atol=1e-6, rtol=0)


def test_export_command_writes_the_default_folder(random_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("export", random_run)
    assert code == 0, err
    assert (tmp_path / "export" / random_run.name / "textae.json").is_file()
    assert "parity with torch" in out


def _binary(path: Path) -> None:
    path.write_bytes(b"\x00\x01\x02 not text\n")


def _latin1(path: Path) -> None:
    path.write_bytes("café au lait\n".encode("latin-1"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "{model}", "{missing}", "--out", "{tmp}/v.npy"], "missing.txt: no such file"),
        (["embed", "{model}", "{binary}", "--out", "{tmp}/v.npy"], "binary.txt:1: contains NUL bytes"),
        (["score", "{model}", "{latin1}"], "latin1.txt:1: not valid UTF-8"),
        (["embed", "{model}", "{good}", "--out", "{tmp}/v.csv"], "v.csv: output must end in .npy or .jsonl"),
        (["embed", "{model}", "{good}", "--out", "{tmp}/no/v.npy"], "output folder does not exist"),
        (["score", "{model}", "{good}", "--top", "1", "--threshold", "2"], "give one of --top, --threshold and --flag-percentile, not several"),
        (["score", "{model}", "{good}", "--flag-percentile", "98"], "percentile must be one of 50, 75, 90, 95 (the ones this export supports)"),
        (["embed", "{model}", "{good}", "--out", "{tmp}/v.npy", "--output", "hidden"], "output must be one of sentence_embedding, features"),
        (["generate", "{model}", "-n", "0"], "number of sentences to generate must be a positive integer"),
        (["generate", "{model}", "--spread", "-1"], "spread must be a non-negative number"),
        (["reconstruct", "{model}"], "give the sentences as arguments or with --file"),
        (["reconstruct", "{tmp}/nowhere", "hello"], "nowhere: model folder not found"),
        (["info", "{tampered}"], "encoder.onnx: sha256 does not match textae.json"),
        (["embed", "{model}", "{good}", "--out", "{tmp}/v.npy", "--precision", "int4"], "precision 'int4' not available"),
        (["export", "{tmp}/nowhere"], "nowhere: run folder not found"),
        (["export", "{run}", "--quantize", "int4", "--out", "{tmp}/x"], "quantize must be one of int8"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    args: list[str], message: str, random_export: Path, random_run: Path, tmp_path: Path, cli: Cli
) -> None:
    _binary(tmp_path / "binary.txt")
    _latin1(tmp_path / "latin1.txt")
    (tmp_path / "good.txt").write_text("hello there\n")
    tampered = copy_export(random_export, tmp_path / "tampered")
    (tampered / "encoder.onnx").write_bytes(b"x" + (tampered / "encoder.onnx").read_bytes()[1:])
    names = {"model": random_export, "run": random_run, "tmp": tmp_path, "tampered": tampered}
    names.update({name: tmp_path / f"{name}.txt" for name in ("missing", "binary", "latin1", "good")})
    code, out, err = cli(*(arg.format(**names) for arg in args))
    assert code == 2
    assert message in err and err.startswith("textae: error: ") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""


def test_embed_streams_any_number_of_lines_into_a_valid_npy(tmp_path) -> None:
    """The .npy header is written first and patched with the row count: check it loads exactly."""
    import numpy as np

    from textae.runtime.files import _npy_header, write_embeddings

    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_embeddings(tmp_path / "v.npy", ["a", "b", "c"], vectors)
    assert np.array_equal(np.load(tmp_path / "v.npy"), vectors)
    assert len(_npy_header(0, 4)) == len(_npy_header(10**12, 4096)) == 128
    (tmp_path / "empty.npy").write_bytes(_npy_header(0, 4))
    assert np.load(tmp_path / "empty.npy").shape == (0, 4)


def test_every_serve_setting_is_an_option_and_every_option_a_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`textae serve`'s options are made from ServeSettings: one per field (but `model`, the
    argument), with the field's default and its trailing comment as help, and each reaches the
    settings the server runs with."""
    import dataclasses

    import typer.main
    from typer.testing import CliRunner

    import textae.serve.server
    from textae.cli import app
    from textae.config import field_help
    from textae.options import option_help
    from textae.serve.settings import ServeSettings

    params = {param.name: param for param in typer.main.get_command(app).commands["serve"].params}  # type: ignore[attr-defined]
    fields = {item.name: item for item in dataclasses.fields(ServeSettings) if item.name != "model"}
    assert set(params) == set(fields) | {"model", "log_level"}
    helps = field_help(ServeSettings)
    for name, item in fields.items():
        assert params[name].default == item.default, name
        assert params[name].help == option_help(helps[name]) and params[name].help.endswith("."), name
    text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "300"}).output
    assert all(f"--{name.replace('_', '-')} " in text for name in fields), text

    seen: list[tuple[ServeSettings, str]] = []
    monkeypatch.setattr(textae.serve.server, "serve", lambda settings, log_level: seen.append((settings, log_level)))
    given = {"max_decode_length": 99, "bucket_multiple": 16, "threads": 3, "api_key_file": str(tmp_path / "key"), "max_wait_ms": 0.5}
    args = [arg for name, value in given.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "export"), *args, "--log-level", "debug"])
    assert result.exit_code == 0, result.output
    assert seen == [(ServeSettings(model=str(tmp_path / "export"), **given), "debug")]
