"""Helpers shared by the export, runtime and CLI tests: small model variants and exports made once.

Exports are cached per session in this module (not in conftest), keyed by run folder and options,
so test files that each declare a session fixture on top of `exported` share one export.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from helpers.tiny import TINY_SENTENCES, write_untrained_run

# Small variants covering every export path: cells, layers, directions, pooling, tied/untied output.
VARIANTS: dict[str, dict[str, Any]] = {
    # each feature source once besides the default tokens: states+tokens, and states (exports before the field)
    "gru-bidirectional-mean-untied": {"cell": "gru", "bidirectional": True, "pooling": "mean", "tie_embeddings": False, "feature_source": "states+tokens"},
    "rnn-2layers-max": {"cell": "rnn", "num_layers": 2, "pooling": "max", "feature_source": "states"},
    "lstm-bidirectional-2layers-final-untied": {"cell": "lstm", "bidirectional": True, "num_layers": 2, "tie_embeddings": False},
    # hidden narrower than embedding: the tied output projection is folded into one matrix
    "lstm-narrow-hidden-max": {"cell": "lstm", "embedding_dim": 40, "hidden_size": 12, "pooling": "max"},
    "lstm-forward-input": {"cell": "lstm", "reverse_input": False},
}

_EXPORTS: dict[tuple[str, str | None], Path] = {}


def make_run(
    run_dir: Path, tokenizer_from: Path, *, adjust: Callable[[Any], None] | None = None, **overrides: Any
) -> Path:
    """A run folder with an untrained model of the given config, reusing another run's tokenizer."""
    from textae.tokenizer import TOKENIZER_FILE, load_tokenizer

    settings = {"embedding_dim": 24, "hidden_size": 32, "latent_dim": 16, "max_length": 24, **overrides}
    return write_untrained_run(run_dir, load_tokenizer(tokenizer_from / TOKENIZER_FILE), adjust=adjust, **settings)


def exported(tmp_path_factory: pytest.TempPathFactory, run_dir: Path, quantize: str | None = None) -> Path:
    """Export run_dir once per session (and per quantize option); later calls return the same folder."""
    from textae.export.folder import export_model

    key = (str(run_dir), quantize)
    if key not in _EXPORTS:
        out_dir = tmp_path_factory.mktemp("export") / run_dir.name
        export_model(run_dir, out_dir, quantize=quantize, console=Console(file=io.StringIO()), sample_sentences=TINY_SENTENCES)
        _EXPORTS[key] = out_dir
    return _EXPORTS[key]


def run_fixture(request: pytest.FixtureRequest, name: str) -> Path:
    """A run folder fixture by name; skips when conftest does not provide it (yet)."""
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        pytest.skip(f"conftest provides no {name} fixture")


def copy_export(source: Path, target: Path) -> Path:
    """A private copy of an export folder, to damage in a test without touching the shared one."""
    shutil.copytree(source, target)
    return target


def without_calibration(source: Path, target: Path) -> Path:
    """A copy of an export as textae wrote it before exports stored calibration (no section, no .npy files)."""
    import json

    from textae.manifest import MANIFEST_FILE, calibration_files

    folder = copy_export(source, target)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for name in calibration_files(manifest.get("calibration")):
        (folder / name).unlink()
        del manifest["files"][name]
    del manifest["calibration"]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder
