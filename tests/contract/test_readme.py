"""The README stays honest: its Python snippets run, and every `textae.x.y` name it cites exists.

Snippets run in a fresh interpreter in an empty folder, with the README's example folders
(export/mine, runs/mine) replaced by the session's tiny trained run and its export; a snippet that
says it imports no torch runs with torch and onnx made unimportable, and one that talks to
http://localhost:8000 talks to a real `textae serve` of that export.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from helpers.blocked_imports import run_python
from helpers.paths import ROOT

README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
SNIPPETS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)
NAMES = sorted(set(re.findall(r"`(textae(?:\.\w+)+)`", TEXT)))
SERVER_URL = "http://localhost:8000"  # where the README's clients find `textae serve`


def test_the_readme_has_python_snippets() -> None:
    assert SNIPPETS, "README.md has no ```python block (update this test if that is on purpose)"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i + 1}" for i in range(len(SNIPPETS))])
def test_a_readme_snippet_runs(snippet: str, trained_run: Path, trained_export: Path, tmp_path: Path) -> None:
    code = snippet.replace("export/mine", str(trained_export)).replace("runs/mine", str(trained_run))
    blocked = ("torch", "onnx") if "no torch" in snippet else ()
    server = None
    if SERVER_URL in code:  # a client of `textae serve`: against a real server of the trained export
        pytest.importorskip("fastapi")  # skips when the serve extra is not installed
        from helpers.server import Server


        server = Server(trained_export)
        server.wait_ready()
        code = code.replace(SERVER_URL, server.url)
    try:
        done = run_python(code, blocked=blocked, cwd=tmp_path)
    finally:
        if server is not None:
            server.stop()
    assert done.returncode == 0, f"README snippet failed:\n{snippet}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("name", NAMES)
def test_a_name_the_readme_cites_exists(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        module, _, attribute = name.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), f"README cites {name}, which does not exist"
