"""The CLI's evaluation commands: evaluate, similar, index, map; and their one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.blocked_imports import run_cli
from helpers.tiny import TINY_SENTENCES

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny evaluation files in every format, built from the tiny corpus."""
    folder = tmp_path_factory.mktemp("eval_data")
    files = {
        "text": "\n".join(TINY_SENTENCES[:10]) + "\n",
        "ood": "SELECT name FROM users WHERE id = 7;\nqqq zzz xxx\n0x7f 0x00 0xff\n",
        "sts": "".join(f"{i % 5}.0\t{TINY_SENTENCES[i]}\t{TINY_SENTENCES[i + 1]}\n" for i in range(12)),
        "probe": "".join(f"{'the' in s.split()}\t{s}\n" for s in TINY_SENTENCES[:24]),
        "probe_test": "".join(f"{'the' in s.split()}\t{s}\n" for s in TINY_SENTENCES[24:36]),
    }
    paths = {}
    for name, text in files.items():
        paths[name] = folder / f"{name}.{'txt' if name in ('text', 'ood') else 'tsv'}"
        paths[name].write_text(text, encoding="utf-8")
    return paths


def one_error_line(code: int, err: str) -> str:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("textae: error: "), err
    return lines[0]


def test_evaluate_prints_tables_and_json(cli: Cli, random_export: Path, data: dict[str, Path]) -> None:
    args = ["evaluate", random_export, "--text", data["text"], "--sts", data["sts"], "--probe", data["probe"],
            "--anomalies", data["text"], data["ood"]]  # fmt: skip
    code, out, err = cli(*args)
    assert code == 0, err
    for expected in ("reconstruction of", "exact match", "Spearman x100", "accuracy", "AUROC"):
        assert expected in out
    code, out, err = cli(*args, "--probe-test", data["probe_test"], "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"model", "reconstruction", "sts", "probe", "anomalies"}
    assert report["reconstruction"]["sentences"] == 10 and report["sts"]["pairs"] == 12
    assert report["probe"]["test_examples"] == 12 and report["probe"]["folds"] == 0
    assert 0.0 <= report["anomalies"]["auroc"] <= 1.0 and report["anomalies"]["out_sentences"] == 3


@pytest.mark.parametrize(
    ("option", "content", "message"),
    [
        ("--sts", "4.0\ta\tb\n3.0\tonly two columns\n", "sts_bad.tsv:2: expected 3 tab-separated columns"),
        ("--sts", "4.0\ta\tb\nfive\ta\tb\n", "sts_bad.tsv:2: score 'five' is not a number"),
        ("--sts", "", "sts_bad.tsv: no sentence pairs (the file is empty)"),
        ("--probe", "pos\tgood\npos\tfine\npos\tgreat\n", "probe_bad.tsv: every example (lines 1-3) has label 'pos'"),
        ("--probe", "pos\tgood\nthis line has no tab\n", "probe_bad.tsv:2: expected 2 tab-separated columns (label, text), found 1"),
        ("--probe", "\n", "probe_bad.tsv: no examples (the file is empty)"),
        ("--text", "\n\n", "text_bad.tsv: no sentences (the file is empty or blank)"),
    ],
)
def test_evaluate_bad_input_is_one_line(cli: Cli, random_export: Path, tmp_path: Path, option: str, content: str, message: str) -> None:
    path = tmp_path / f"{option.strip('-')}_bad.tsv"
    path.write_text(content, encoding="utf-8")
    line = one_error_line(*cli("evaluate", random_export, option, path)[::2])
    assert str(path) in line and message in line


def test_evaluate_usage_errors(cli: Cli, random_export: Path, data: dict[str, Path]) -> None:
    assert "nothing to evaluate" in one_error_line(*cli("evaluate", random_export)[::2])
    assert "--probe-test needs --probe" in one_error_line(*cli("evaluate", random_export, "--probe-test", data["probe"])[::2])
    line = one_error_line(*cli("evaluate", random_export, "--anomalies", data["text"])[::2])
    assert "--anomalies" in line  # the option takes two files


def test_index_then_similar(cli: Cli, random_export: Path, data: dict[str, Path], tmp_path: Path) -> None:
    index = tmp_path / "corpus.npz"
    # int8 (the default only when the export's gate passes, which an untrained model's does not)
    code, _, err = cli("index", random_export, data["text"], "--out", index, "--precision", "int8")
    assert code == 0 and "indexed 10 sentences" in err and index.is_file()
    for corpus in (index, data["text"]):
        code, out, err = cli("similar", random_export, "--corpus", corpus, TINY_SENTENCES[2], "a new query", "--top", "3", "--precision", "int8")
        assert code == 0, err
        blocks = out.strip().split("\n\n")
        assert len(blocks) == 2 and blocks[0].splitlines()[0] == f"# {TINY_SENTENCES[2]}"
        rank, score, text = blocks[0].splitlines()[1].split("\t")
        assert (rank, text) == ("1", TINY_SENTENCES[2]) and float(score) == pytest.approx(1.0, abs=1e-3)
        assert [line.split("\t")[0] for line in blocks[1].splitlines()[1:]] == ["1", "2", "3"]
    line = one_error_line(*cli("similar", random_export, "--corpus", index, "query", "--precision", "fp32")[::2])
    assert "corpus.npz: index was built with a different model" in line
    assert "must end in .npz" in one_error_line(*cli("index", random_export, data["text"], "--out", tmp_path / "x.bin")[::2])


def test_map_writes_a_png(cli: Cli, random_export: Path, data: dict[str, Path], tmp_path: Path) -> None:
    import matplotlib.image

    for source, extra in ((data["text"], []), (data["probe"], ["--labels"])):
        out = tmp_path / f"{source.stem}.png"
        code, _, err = cli("map", random_export, source, "--out", out, *extra)
        assert code == 0, err
        height, width, _ = matplotlib.image.imread(out).shape
        assert width > 600 and height > 400
    assert ".png" in one_error_line(*cli("map", random_export, data["text"], "--out", tmp_path / "map.jpg")[::2])
    line = one_error_line(*cli("map", random_export, data["text"], "--out", tmp_path / "m.png", "--labels")[::2])
    assert "text.txt:1: expected 2 tab-separated columns" in line


def test_evaluation_commands_do_not_import_torch(random_export: Path, data: dict[str, Path]) -> None:
    report = run_cli([["evaluate", random_export, "--sts", data["sts"], "--json"]])
    (result,) = report.results
    assert result["code"] == 0, result["err"]
    assert "spearman" in json.loads(result["out"])["sts"] and report.loaded == []


@pytest.mark.parametrize(
    ("command", "settings", "arguments"),
    [("similar", "SimilarSettings", {"model", "queries"}), ("map", "MapSettings", {"model", "source"})],
)
def test_every_setting_is_an_option_and_every_option_a_setting(command: str, settings: str, arguments: set[str]) -> None:
    """similar's and map's options are made from their settings dataclass and LoadSettings: one per
    field, with the field's default and its trailing comment as help."""
    import dataclasses

    import typer.main

    import textae.evaluation.settings
    from textae.cli import app
    from textae.config import field_help
    from textae.options import option_help

    params = {param.name: param for param in typer.main.get_command(app).commands[command].params}  # type: ignore[attr-defined]
    fields = {}
    for config in (getattr(textae.evaluation.settings, settings), textae.evaluation.settings.LoadSettings):
        helps = field_help(config)
        fields |= {item.name: (item, option_help(helps[item.name])) for item in dataclasses.fields(config)}
    assert set(params) == set(fields) | arguments
    for name, (item, help_text) in fields.items():
        required = item.default is dataclasses.MISSING
        assert params[name].required == required and (required or params[name].default == item.default), name
        assert params[name].help == help_text and help_text.endswith("."), name
