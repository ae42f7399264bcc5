"""`textae train` through the real console entry point, including every bad input we promise to handle."""

import tempfile
from pathlib import Path

import pytest
from helpers.tiny import TINY_SENTENCES

FAST = ["--vocab-size", "400", "--batch-size", "10", "--max-steps", "2", "--embedding-dim", "16",
        "--hidden-size", "16", "--latent-dim", "8", "--quiet"]  # fmt: skip


def test_train_writes_a_run_folder(cli, tiny_corpus: Path, tmp_path: Path) -> None:
    code, _, err = cli("train", tiny_corpus, "--out", tmp_path / "run", *FAST)
    assert code == 0, err
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "best.pt").is_file()
    assert "best valid loss" in err


def test_options_from_a_toml_file_and_flags_win(cli, tiny_corpus: Path, tmp_path: Path) -> None:
    import json

    config = tmp_path / "train.toml"
    config.write_text('[train]\nhidden-size = 24\nbatch_size = 10\nmax_steps = 1\nvocab_size = 400\nlatent_dim = 8\n')
    code, _, err = cli("train", tiny_corpus, "--config", config, "--out", tmp_path / "run", "--latent-dim", "12", "--quiet")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["hidden_size"] == 24 and saved["model"]["latent_dim"] == 12
    assert saved["train"]["max_steps"] == 1


def test_help_lists_every_option(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich shortens long option names in narrow terminals
    code, out, _ = cli("train", "--help")
    assert code == 0
    for option in ("--teacher-forcing-schedule", "--vocab-size", "--resume", "--max-length", "--cell", "--config"):
        assert option in out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    text = ("\n".join(TINY_SENTENCES) + "\n").encode()
    return {
        "missing file": ([str(tmp / "missing.txt")], "missing.txt: no such file"),
        "directory": ([str(tmp)], "is a directory"),
        "empty file": ([str(_write(tmp / "empty.txt", b""))], "no sentences"),
        "only empty lines": ([str(_write(tmp / "blank.txt", b"\n\n   \n\t\n"))], "no sentences"),
        "binary": ([str(_write(tmp / "model.bin", bytes(range(256)) * 8))], "binary"),
        "invalid utf-8": ([str(_write(tmp / "latin1.txt", text + "caf\xe9\n".encode("latin-1")))], "latin1.txt:51: not valid UTF-8"),
        "one 10 MB line": ([str(_write(tmp / "huge.txt", b"word " * 2_000_000))], "fewer than one batch"),
        "fewer sentences than a batch": ([str(_write(tmp / "few.txt", b"one.\ntwo.\nthree.\n"))], "only 2 training sentences (1 more held out"),
        "unwritable output": ([str(_write(tmp / "ok.txt", text)), "--out", str(_write(tmp / "a-file", b"x") / "run")], "cannot write"),
        "output is a file": ([str(tmp / "ok.txt"), "--out", str(tmp / "a-file")], "not a folder"),
        "negative epochs": ([str(tmp / "ok.txt"), "--epochs", "-1"], "epochs must be a positive integer"),
        "unknown cell": ([str(tmp / "ok.txt"), "--cell", "transformer"], "cell must be one of lstm, gru, rnn"),
        "not a number": ([str(tmp / "ok.txt"), "--learning-rate", "fast"], "Invalid value for '--learning-rate'"),
        "zero learning rate": ([str(tmp / "ok.txt"), "--learning-rate", "0"], "learning_rate must be positive"),
        "bad time budget": ([str(tmp / "ok.txt"), "--time-budget", "soon"], "time_budget must be a duration such as 30m"),
        "unknown optimizer": ([str(tmp / "ok.txt"), "--optimizer", "lbfgs"], "optimizer must be one of adamw, adam, sgd"),
        "bad noise": ([str(tmp / "ok.txt"), "--noise", "blur:0.1"], "noise must look like delete:0.1"),
        "bad dropout": ([str(tmp / "ok.txt"), "--dropout", "2"], "dropout must be in [0, 1)"),
        "resume a non-run": (["--resume", "--out", str(tmp)], "not a textae run folder"),
        "resume a missing folder": (["--resume", "--out", str(tmp / "nowhere")], "no such run folder"),
        "bad toml": ([str(tmp / "ok.txt"), "--config", str(_write(tmp / "bad.toml", b"this is = = not toml"))], "not valid TOML"),
        "unknown toml key": ([str(tmp / "ok.txt"), "--config", str(_write(tmp / "typo.toml", b"hiden_size = 3\n"))], "unknown option(s) hiden_size"),
    }


with tempfile.TemporaryDirectory() as _names_only:
    CASES = list(_bad_inputs(Path(_names_only)))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_error_and_leaves_nothing_complete(cli, tmp_path: Path, case: str) -> None:
    args, expected = _bad_inputs(tmp_path / "inputs")[case]
    out_dir = tmp_path / "out"
    if "--out" not in args:
        args = [*args, "--out", str(out_dir)]
    code, stdout, stderr = cli("train", *args, "--vocab-size", "400", "--batch-size", "10", "--quiet")
    assert code != 0
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("textae: error: "), stderr
    assert expected in lines[0]
    assert not (out_dir / "summary.json").exists() and not (out_dir / "checkpoint.pt").exists()


def test_a_huge_line_among_normal_ones_is_truncated_not_fatal(cli, tmp_path: Path) -> None:
    corpus = tmp_path / "mixed.txt"
    corpus.write_bytes(b"word " * 2_000_000 + b"\n" + ("\n".join(TINY_SENTENCES) + "\n").encode())
    code, _, err = cli("train", corpus, "--out", tmp_path / "run", "--max-length", "16", *FAST)
    assert code == 0, err


def test_train_through_typers_cli_runner(tiny_corpus: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from textae.cli import app

    result = CliRunner().invoke(app, ["train", str(tiny_corpus), "--out", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "summary.json").is_file()
    bad = CliRunner().invoke(app, ["train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "other")])
    assert bad.exit_code == 2 and "missing.txt: no such file" in bad.output and "Traceback" not in bad.output


def test_every_config_field_is_a_train_option_and_every_option_a_field() -> None:
    import dataclasses

    import typer.main

    from textae.cli import MODEL_OPTIONS, TRAIN_OPTIONS, app
    from textae.config import DERIVED_MODEL_FIELDS, ModelConfig, TrainConfig

    params = {param.name: param for param in typer.main.get_command(app).commands["train"].params}  # type: ignore[attr-defined]
    fields = {TRAIN_OPTIONS.option_name(f.name): (TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig) if f.name != "corpus"}
    fields |= {f.name: (ModelConfig(), f.name) for f in dataclasses.fields(ModelConfig) if f.name not in DERIVED_MODEL_FIELDS}
    assert set(params) == set(fields) | {"corpus", "config", "resume", "quiet"}
    for name, (defaults, field) in fields.items():
        assert params[name].default == getattr(defaults, field), name  # defaults are the library's
        assert params[name].help and params[name].help.endswith("."), name
    # the ModelConfig fields training sets itself (from the tokenizer and TrainConfig) are not options
    assert set(DERIVED_MODEL_FIELDS) == {"vocab_size", "max_length", "pad_id", "bos_id", "eos_id", "unk_id"}
    assert MODEL_OPTIONS.skip == DERIVED_MODEL_FIELDS


def test_options_reach_the_configs(cli, tiny_corpus: Path, tmp_path: Path) -> None:
    import json

    code, _, err = cli(
        "train", tiny_corpus, "--out", tmp_path / "run", *FAST, "--threads", "1", "--no-reverse-input",
        "--max-valid-sentences", "7", "--cell", "gru", "--teacher-forcing-end", "0.5",
    )  # fmt: skip
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["num_threads"] == 1 and saved["train"]["max_valid_sentences"] == 7
    assert saved["train"]["teacher_forcing_end"] == 0.5 and saved["train"]["corpus"] == [str(tiny_corpus)]
    assert saved["model"]["cell"] == "gru" and saved["model"]["reverse_input"] is False and saved["model"]["vocab_size"] <= 400
