"""The package as users get it: every package folder in the wheel, and the shipped corpus found
through the installed package (`textae demo` from a wheel), in a fresh virtual environment.

The slow tests work offline: the wheel is built without build isolation and installed without
dependencies into a venv that sees the site-packages of the environment running the tests (numpy,
onnxruntime, setuptools, pip, ...), never those of the base interpreter, which may lack them when
the suite itself runs in a venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib
from helpers.paths import ROOT

CORPUS = "textae/corpora/python-docs.txt"
# what a wheel is built from (a copy, so the build leaves nothing in the checkout)
SOURCES = ("pyproject.toml", "README.md", "textae", "corpora")
REPORT = (
    "import json, sys, textae\n"
    "from textae.demo import SHIPPED_CORPUS\n"
    "print(json.dumps({'package': textae.__file__, 'corpus': str(SHIPPED_CORPUS), 'lines': len(SHIPPED_CORPUS.read_text().splitlines())}))\n"
)


def test_pyproject_lists_every_package_folder() -> None:
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    folders = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "textae").rglob("__init__.py")}
    assert set(listed) == folders | {"textae.corpora"}, "add the new package to [tool.setuptools] packages in pyproject.toml"


def _copy_sources(target: Path) -> Path:
    target.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target / name)
    return target


def _pip(python: Path, *args: str, cwd: Path) -> None:
    done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True, cwd=cwd, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _fresh_venv(path: Path) -> Path:
    """A venv whose own site-packages comes first, then this environment's (by a .pth file: plain
    paths, so this environment's own .pth hooks, such as an editable textae, are not run there)."""
    venv.create(path, system_site_packages=False, with_pip=False)  # pip comes from this environment too
    python = path / "bin" / "python"
    done = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True)
    ours = [entry for entry in sys.path if entry.endswith(("site-packages", "dist-packages")) and Path(entry).is_dir()]
    (Path(done.stdout.strip()) / "test-environment.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    return python


def _report(python: Path, cwd: Path) -> dict[str, object]:
    # no PYTHONPATH: the checkout must not shadow the installed package
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([str(python), "-c", REPORT], capture_output=True, text=True, cwd=cwd, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_the_wheel_ships_the_corpus_and_demo_finds_it_installed(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    source = _copy_sources(tmp_path / "source")
    _pip(Path(sys.executable), "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w", str(tmp_path / "dist"), cwd=source)
    (wheel,) = (tmp_path / "dist").glob("textae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert CORPUS in names and "textae/runtime/model.py" in names
    assert not [name for name in names if name.startswith(("tools/", "tests/", "corpora/"))]

    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "install", "--no-deps", "--no-index", "-q", str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = _report(python, elsewhere)
    site = (tmp_path / "venv").resolve()
    assert Path(str(report["package"])).resolve().is_relative_to(site), report
    assert Path(str(report["corpus"])).resolve().is_relative_to(site) and int(report["lines"]) > 10_000, report


@pytest.mark.slow
def test_an_editable_install_finds_the_corpus_in_the_checkout(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="an offline editable install needs setuptools in this environment")
    source = _copy_sources(tmp_path / "source")
    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-e", str(source), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = _report(python, elsewhere)
    assert Path(str(report["package"])).resolve() == (source / "textae" / "__init__.py").resolve(), report
    assert Path(str(report["corpus"])).resolve() == (source / "corpora" / "python-docs.txt").resolve(), report
