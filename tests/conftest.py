"""Session fixtures shared across the test folders: the tiny corpus, run folders and exports made once,
and the in-process CLI. Constants and helpers live in tests/helpers (importable as `helpers`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.tiny import TINY_MODEL, TINY_SENTENCES, TINY_TRAIN, write_untrained_run


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(TINY_SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def random_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """A run folder with an untrained (randomly initialised) small model: enough for parity tests."""
    from textae.config import TrainConfig
    from textae.tokenizer import train_tokenizer

    return write_untrained_run(
        tmp_path_factory.mktemp("random_run"), train_tokenizer(TINY_SENTENCES, vocab_size=400),
        train=TrainConfig(corpus=[str(tiny_corpus)]), embedding_dim=32, hidden_size=48, latent_dim=24, max_length=32,
    )  # fmt: skip


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """A run overfitted on the tiny corpus (validated on the same sentences): reconstructs them exactly."""
    from textae.config import ModelConfig, TrainConfig
    from textae.training.loop import train

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    config = TrainConfig(corpus=[str(tiny_corpus)], valid=str(tiny_corpus), out=str(run_dir), max_steps=160, epochs=1000, **TINY_TRAIN)
    train(config, ModelConfig(**TINY_MODEL), show_progress=False)
    return run_dir


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the real console entry point in-process: returns (exit code, stdout, stderr)."""
    from textae.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["textae", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def random_export(tmp_path_factory: pytest.TempPathFactory, random_run: Path) -> Path:
    """random_run exported once per session, with int8 graphs beside the fp32 ones."""
    from helpers.exports import exported

    return exported(tmp_path_factory, random_run, quantize="int8")


@pytest.fixture(scope="session")
def trained_export(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> Path:
    from helpers.exports import exported

    return exported(tmp_path_factory, trained_run)
