"""textae.extras: a command that needs a missing extra says in one line what to install, exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from blocked_imports import run_cli

from textae.errors import TextaeError
from textae.extras import import_optional, missing_extra


def test_missing_extra_names_the_pip_install_for_known_modules_only() -> None:
    error = missing_extra(ModuleNotFoundError("no torch", name="torch"), "textae train")
    assert str(error) == 'textae train needs torch, which is not installed: pip install "textae[train]"'
    assert "textae[eval]" in str(missing_extra(ModuleNotFoundError(name="sklearn.linear_model"), "the probe"))
    assert missing_extra(ModuleNotFoundError(name="not_an_extra"), "x") is None
    with pytest.raises(TextaeError, match=r'the map needs matplotlib, which is not installed: pip install "textae\[eval\]"'):
        _import_blocked("matplotlib", "the map")
    with pytest.raises(ModuleNotFoundError):  # a module no extra provides is a real bug, not a hint
        import_optional("surely_not_a_module_of_textae", "x")


def _import_blocked(module: str, purpose: str) -> None:
    import sys

    saved = sys.modules.get(module)
    sys.modules[module] = None  # type: ignore[assignment]
    try:
        import_optional(module, purpose)
    finally:
        if saved is None:
            del sys.modules[module]
        else:
            sys.modules[module] = saved


def _one_error_line(result: dict[str, object]) -> str:
    assert result["code"] == 2 and "Traceback" not in str(result["err"]), result
    lines = str(result["err"]).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("textae: error: "), result
    return lines[0]


def test_training_commands_without_torch_say_install_the_train_extra(tiny_corpus: Path, random_run: Path, tmp_path: Path) -> None:
    report = run_cli(
        [
            ["train", tiny_corpus, "--out", tmp_path / "run"],
            ["export", random_run, "--out", tmp_path / "export"],
            ["demo", "--out", tmp_path / "demo-run", "--export", tmp_path / "demo-export"],
        ]
    )
    for command, result in zip(("train", "export", "demo"), report.results):
        line = _one_error_line(result)
        assert line.startswith(f"textae: error: textae {command} needs ") and line.endswith('which is not installed: pip install "textae[train]"')
    assert not any(tmp_path.iterdir())  # nothing written


def test_evaluate_without_scikit_learn_says_install_the_eval_extra(random_export: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.tsv"
    probe.write_text("pos\tgood\npos\tfine\nneg\tbad\nneg\tawful\n", encoding="utf-8")
    report = run_cli([["evaluate", random_export, "--probe", probe]], blocked=("sklearn",))
    line = _one_error_line(report.results[0])
    assert "needs sklearn, which is not installed" in line and line.endswith('pip install "textae[eval]"')
