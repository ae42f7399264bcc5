"""`ruff check` is clean on the whole tree with the rules pyproject.toml selects.

The rules a ruff release applies to one selection can change between releases, so the test runs only
the ruff the dev extra pins (and skips, saying so, where another one or none is installed).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import tomllib
from helpers.paths import ROOT


def pinned_ruff() -> str:
    """The dev extra's ruff requirement, e.g. "ruff>=0.17,<0.18"."""
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    (requirement,) = [item for item in dev if re.match(r"ruff\b", item)]
    return requirement


def test_ruff_check_is_clean_on_the_tree() -> None:
    if importlib.util.find_spec("ruff") is None:
        pytest.skip('ruff is not installed (pip install -e ".[dev]")')
    from packaging.requirements import Requirement

    version = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True, check=True)
    installed = version.stdout.split()[-1]
    requirement = Requirement(pinned_ruff())
    if not requirement.specifier.contains(installed):
        pytest.skip(f"ruff {installed} is installed; the rules are checked with {requirement}")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"ruff check found problems:\n{done.stdout}{done.stderr}"
