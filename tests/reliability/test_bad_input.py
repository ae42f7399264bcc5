"""Every command, every bad input: exit status 2, one line `textae: error: ...`, no traceback, and a
pre-existing --out file unharmed. One table; each row is a command line and a fragment of its error.

`serve` is not covered here yet (it is being added on its own branch).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.tiny import TINY_SENTENCES

SENTINEL = b"an earlier result that a failed command must not touch\n"


@dataclass
class Case:
    args: list[str]
    expected: str  # a fragment of the one error line
    out: str | None = None  # an output file that exists before the command and must survive it
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None


def _unreadable(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """chmod 000 stops no one when tests run as root, so deny read access the way os.access would."""
    import textae.corpus

    real = os.access
    monkeypatch.setattr(textae.corpus.os, "access", lambda p, mode: False if Path(p) == path else real(p, mode))


def _files(tmp: Path, export: Path) -> dict[str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    text = ("\n".join(TINY_SENTENCES) + "\n").encode()
    files = {
        "text": text, "empty": b"", "blank": b"\n \n\t\n", "binary": bytes(range(256)) * 8,
        "latin1": text + "caf\xe9\n".encode("latin-1"), "gz": b"not gzip at all", "tsv": b"no tabs in this line\n",
        "sts": b"5.0\tonly one sentence\n", "probe": b"pos\tgood\n", "toml": b"a = = b",
        "existing.npy": SENTINEL, "existing.jsonl": SENTINEL, "existing.npz": SENTINEL, "existing.png": SENTINEL,
    }  # fmt: skip
    paths = {}
    for name, data in files.items():
        paths[name] = tmp / (name if "." in name else f"{name}.txt" if name != "gz" else "corpus.txt.gz")
        paths[name].write_bytes(data)
    paths["huge"] = tmp / "huge.txt"
    paths["huge"].write_bytes(b"word " * 2_000_000)  # one 10 MB line
    paths["dir"] = tmp / "a-folder"
    paths["dir"].mkdir()
    paths["fifo"] = tmp / "fifo"
    os.mkfifo(paths["fifo"])
    for name, damage in {"missing-file": "missing", "truncated": "truncated", "tampered": "tampered", "newer": "newer",
                         "bad-manifest": "bad-manifest", "absurd-model": "absurd-model", "outside": "outside"}.items():  # fmt: skip
        folder = tmp / f"export-{name}"
        shutil.copytree(export, folder)
        manifest = json.loads((folder / "textae.json").read_text())
        if damage == "missing":
            (folder / "decoder_score.onnx").unlink()
        elif damage == "truncated":
            data = (folder / "encoder.onnx").read_bytes()
            (folder / "encoder.onnx").write_bytes(data[: len(data) // 2])
        elif damage == "tampered":
            data = bytearray((folder / "tokenizer.json").read_bytes())
            data[len(data) // 2] ^= 1
            (folder / "tokenizer.json").write_bytes(bytes(data))
        elif damage == "newer":
            manifest["format_version"] = 99
        elif damage == "bad-manifest":
            manifest["graphs"] = "absurd"
        elif damage == "absurd-model":
            manifest["model"]["latent_dim"] = "a lot"
        elif damage == "outside":  # a manifest naming a file outside its folder, through a symlink
            (folder / "encoder.onnx").unlink()
            (folder / "encoder.onnx").symlink_to(export / "encoder.onnx")
            manifest["files"]["../escape.onnx"] = manifest["files"]["encoder.onnx"]
        (folder / "textae.json").write_text(json.dumps(manifest))
        paths[name] = folder
    return paths


def _cases(f: dict[str, str], e: str, run: str, out: str, index: str) -> dict[str, Case]:
    """The table; f names the prepared input files (see _files), e the good export, run a run folder."""
    return {
        # train
        "train: missing corpus": Case(["train", f["text"] + ".missing", "--out", out], "no such file"),
        "train: empty corpus": Case(["train", f["empty"], "--out", out, "--vocab-size", "400"], "no sentences"),
        "train: binary corpus": Case(["train", f["binary"], "--out", out, "--vocab-size", "400"], "binary"),
        "train: non-UTF-8": Case(["train", f["latin1"], "--out", out, "--vocab-size", "400"], "not valid UTF-8"),
        "train: directory": Case(["train", f["dir"], "--out", out], "is a directory"),
        "train: unreadable": Case(["train", f["text"], "--out", out], "permission denied", patch=lambda m, t: _unreadable(m, t / "text.txt")),
        "train: huge single line": Case(["train", f["huge"], "--out", out, "--vocab-size", "400", "--batch-size", "10"], "fewer than one batch"),
        "train: FIFO corpus": Case(["train", f["fifo"], "--out", out], "not a regular file"),
        "train: /dev/zero": Case(["train", "/dev/zero", "--out", out], "not a regular file"),
        "train: broken gzip": Case(["train", f["gz"], "--out", out, "--vocab-size", "400"], "not a valid gzip file"),
        "train: bad option": Case(["train", f["text"], "--out", out, "--batch-size", "0"], "batch_size must be a positive integer"),
        "train: bad toml": Case(["train", f["text"], "--out", out, "--config", f["toml"]], "not valid TOML"),
        "train: resume a non-run": Case(["train", "--resume", "--out", f["dir"]], "not a textae run folder"),
        "train: out is a file": Case(["train", f["text"], "--out", f["existing.npy"]], "not a folder", out="existing.npy"),
        # export
        "export: not a run": Case(["export", f["dir"], "--out", out], "not a textae run folder"),
        "export: missing run": Case(["export", out + "-missing", "--out", out], "run folder not found"),
        "export: bad quantize": Case(["export", run, "--out", out, "--quantize", "int4"], "quantize must be one of"),
        "export: bad opset": Case(["export", run, "--out", out, "--opset", "3"], "opset must be"),
        "export: out is the run folder": Case(["export", run, "--out", run], "not a textae export folder"),
        "export: out is a file": Case(["export", run, "--out", f["existing.png"]], "not a folder", out="existing.png"),
        # embed
        "embed: missing input": Case(["embed", e, f["text"] + ".missing", "--out", f["existing.npy"]], "no such file", out="existing.npy"),
        "embed: binary input": Case(["embed", e, f["binary"], "--out", f["existing.npy"]], "binary", out="existing.npy"),
        "embed: non-UTF-8 input": Case(["embed", e, f["latin1"], "--out", f["existing.jsonl"]], "not valid UTF-8", out="existing.jsonl"),
        "embed: directory input": Case(["embed", e, f["dir"], "--out", f["existing.npy"]], "is a directory", out="existing.npy"),
        "embed: device input": Case(["embed", e, "/dev/zero", "--out", f["existing.npy"]], "not a regular file", out="existing.npy"),
        "embed: bad suffix": Case(["embed", e, f["text"], "--out", out + ".txt"], "must end in .npy or .jsonl"),
        "embed: out is a folder": Case(["embed", e, f["text"], "--out", f["dir"]], "must end in"),
        "embed: out inside the export": Case(["embed", e, f["text"], "--out", e + "/textae.json"], "must end in"),
        "embed: bad batch size": Case(["embed", e, f["text"], "--out", f["existing.npy"], "--batch-size", "0"], "batch_size must be a positive integer", out="existing.npy"),
        "embed: export file missing": Case(["embed", f["missing-file"], f["text"], "--out", f["existing.npy"]], "missing", out="existing.npy"),
        "embed: truncated graph": Case(["embed", f["truncated"], f["text"], "--out", f["existing.npy"]], "truncated or replaced", out="existing.npy"),
        "embed: tampered tokenizer": Case(["embed", f["tampered"], f["text"], "--out", f["existing.npy"]], "sha256 does not match", out="existing.npy"),
        "embed: newer format": Case(["embed", f["newer"], f["text"], "--out", f["existing.npy"]], "format_version 99 is not supported", out="existing.npy"),
        "embed: absurd manifest": Case(["embed", f["bad-manifest"], f["text"], "--out", f["existing.npy"]], "textae.json", out="existing.npy"),
        "embed: absurd model config": Case(["embed", f["absurd-model"], f["text"], "--out", f["existing.npy"]], "latent_dim must be", out="existing.npy"),
        "embed: file outside the export": Case(["embed", f["outside"], f["text"], "--out", f["existing.npy"]], "outside the model folder", out="existing.npy"),
        "embed: not an export": Case(["embed", f["dir"], f["text"], "--out", f["existing.npy"]], "not a textae export folder", out="existing.npy"),
        "embed: bad precision": Case(["embed", e, f["text"], "--out", f["existing.npy"], "--precision", "int4"], "precision 'int4' not available", out="existing.npy"),
        # reconstruct, score, info
        "reconstruct: no text": Case(["reconstruct", e], "give the sentences"),
        "reconstruct: binary file": Case(["reconstruct", e, "--file", f["binary"]], "binary"),
        "reconstruct: bad threads": Case(["reconstruct", e, "hello", "--threads", "0"], "num_threads must be a positive integer"),
        "score: empty-line binary": Case(["score", e, f["binary"]], "binary"),
        "score: top and threshold": Case(["score", e, f["text"], "--top", "2", "--threshold", "1"], "not several"),
        "score: bad top": Case(["score", e, f["text"], "--top", "0"], "--top must be a positive integer"),
        "info: truncated export": Case(["info", f["truncated"]], "truncated or replaced"),
        "info: not a folder": Case(["info", f["text"]], "not a folder"),
        # evaluate, similar, index, map
        "evaluate: nothing to do": Case(["evaluate", e], "nothing to evaluate"),
        "evaluate: malformed STS TSV": Case(["evaluate", e, "--sts", f["tsv"]], "tsv"),
        "evaluate: STS with one sentence": Case(["evaluate", e, "--sts", f["sts"]], "sts.txt"),
        "evaluate: missing file": Case(["evaluate", e, "--text", f["text"] + ".missing"], "no such file"),
        "similar: missing corpus": Case(["similar", e, "a query", "--corpus", f["text"] + ".missing"], "no such file"),
        "similar: bad top": Case(["similar", e, "a query", "--corpus", f["text"], "--top", "0"], "top"),
        "similar: index of another model": Case(["similar", e, "a query", "--corpus", index, "--precision", "fp32"], "different model or precision"),
        "similar: index file that is not one": Case(["similar", e, "a query", "--corpus", f["existing.npz"]], "existing.npz"),
        "index: empty input": Case(["index", e, f["empty"], "--out", f["existing.npz"]], "no sentences", out="existing.npz"),
        "index: bad suffix": Case(["index", e, f["text"], "--out", out + ".idx"], "must end in .npz"),
        "map: bad method": Case(["map", e, f["text"], "--out", f["existing.png"], "--method", "umap"], "method must be one of", out="existing.png"),
        "map: too few points": Case(["map", e, f["text"], "--out", f["existing.png"], "--max-points", "1"], "max_points must be at least 2", out="existing.png"),
        "map: labels without tabs": Case(["map", e, f["text"], "--out", f["existing.png"], "--labels"], "text.txt", out="existing.png"),
    }


@dataclass
class Prepared:
    inputs: Path
    files: dict[str, str]
    index: str  # an index built with the export's int8 graphs


@pytest.fixture(scope="module")
def prepared(random_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    from textae.runtime.model import TextAE
    from textae.runtime.search import VectorIndex

    folder = tmp_path_factory.mktemp("bad-input")
    files = _files(folder / "inputs", random_export)
    index = VectorIndex.build(TextAE.load(random_export, precision="int8"), files["text"])
    index.save(folder / "int8.npz")
    return Prepared(folder / "inputs", {name: str(path) for name, path in files.items()}, str(folder / "int8.npz"))


def _case_names() -> list[str]:
    from collections import defaultdict

    return list(_cases(defaultdict(str), "", "", "", ""))


@pytest.mark.parametrize("name", _case_names())
def test_bad_input_is_one_line_exit_2_and_no_damage(
    name: str, cli, random_export: Path, random_run: Path, prepared: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _cases(prepared.files, str(random_export), str(random_run), str(tmp_path / "out"), prepared.index)[name]
    if case.out is not None:
        (prepared.inputs / case.out).write_bytes(SENTINEL)
    if case.patch is not None:
        case.patch(monkeypatch, prepared.inputs)
    code, stdout, stderr = cli(*case.args)
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("textae: error: "), stderr
    assert "Traceback" not in stdout + stderr
    assert case.expected in lines[0], lines[0]
    if case.out is not None:
        assert (prepared.inputs / case.out).read_bytes() == SENTINEL
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_table_covers_every_command_and_at_least_30_cases() -> None:
    names = _case_names()
    commands = {name.split(":")[0] for name in names}
    assert {"train", "export", "embed", "reconstruct", "score", "info", "evaluate", "similar", "index", "map"} <= commands
    assert len(names) >= 30
