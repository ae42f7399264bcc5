"""A run folder and an export on a disk that fills up: one line naming the file, the previous
checkpoint or export intact, and --resume finishing the run once there is space again.

Two ways to fill the disk, both always tried where they can be: a real 16 MB tmpfs (needs root and
mount rights; CI runs as root) and, everywhere, an fsync that raises ENOSPC for files in the
target folder (a full disk or quota often reports itself only at fsync or close).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch


class FullDisk:
    """A folder whose filesystem can be made full (fill) and given space again (free)."""

    def __init__(self, kind: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind, self.root, self.monkeypatch = kind, root, monkeypatch
        self.filler = root / "filler"

    def fill(self, leave: int = 0, only: str = "") -> None:
        """Leave about `leave` bytes free (tmpfs), or fail every fsync of a file under root whose
        name contains `only` (patched)."""
        if self.kind == "tmpfs":
            # unbuffered: a buffered file would retry its unwritten tail on close, raising ENOSPC there
            with open(self.filler, "ab", buffering=0) as handle:
                try:
                    while True:
                        handle.write(b"\0" * (1 << 16))
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
            if leave:
                with open(self.filler, "r+b") as handle:
                    handle.truncate(max(0, self.filler.stat().st_size - leave))
            return
        real_fsync = os.fsync
        root = str(self.root.resolve())

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.startswith(root) and only in Path(path).name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        self.monkeypatch.setattr(os, "fsync", fsync)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        self.monkeypatch.undo()


@pytest.fixture(params=["tmpfs", "patched-fsync"])
def disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FullDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    if request.param == "tmpfs":
        command = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(root)]
        mounted = subprocess.run(command, check=False, capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:80]}); the patched case still runs")
    try:
        yield FullDisk(request.param, root, monkeypatch)
    finally:
        monkeypatch.undo()
        if request.param == "tmpfs":
            subprocess.run(["umount", "-l", str(root)], check=False)


def _one_error_line(err: str) -> str:
    """The one error line (progress lines such as "resuming RUN at step 6" may come before it)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("textae: error: ")]
    assert errors == lines[-1:], err
    assert "no space left" in errors[0] and "Traceback" not in err
    return errors[0]


def _step(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, weights_only=True)["training_state"]["step"])


def _config(out: Path, corpus: Path):
    from textae.config import ModelConfig, TrainConfig

    train = TrainConfig(corpus=[str(corpus)], out=str(out), vocab_size=400, batch_size=10, max_steps=12, epochs=100,
                        checkpoint_every=3, eval_every=6, log_every=2, num_threads=2)  # fmt: skip
    return train, ModelConfig(embedding_dim=16, hidden_size=16, latent_dim=8)


@pytest.mark.slow
def test_training_on_a_full_disk_keeps_the_checkpoint_and_resumes(cli, disk: FullDisk, tiny_corpus: Path, tmp_path: Path) -> None:
    from textae.training.loop import train

    train(*_config(tmp_path / "reference", tiny_corpus), show_progress=False)
    run = disk.root / "run"
    train(*_config(run, tiny_corpus), show_progress=False, stop_at_step=6)  # as if killed at step 6
    before = (run / "checkpoint.pt").read_bytes()
    disk.fill(leave=len(before) // 3, only="checkpoint.pt")
    code, _, err = cli("train", "--resume", "--out", run, "--quiet")
    assert code == 2
    line = _one_error_line(err)
    assert "checkpoint.pt" in line and f"--resume --out {run}" in line
    assert (run / "checkpoint.pt").read_bytes() == before and _step(run / "checkpoint.pt") == 6  # still loads
    disk.free()
    code, _, err = cli("train", "--resume", "--out", run, "--quiet")
    assert code == 0, err
    a = torch.load(tmp_path / "reference" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_export_to_a_full_disk_keeps_the_previous_export(cli, disk: FullDisk, trained_run: Path) -> None:
    from textae.runtime.model import TextAE

    out = disk.root / "export"
    code, _, err = cli("export", trained_run, "--out", out)
    assert code == 0, err
    before = TextAE.load(out).embed(["the cat sat on the mat."])
    disk.fill()
    code, _, err = cli("export", trained_run, "--out", out)
    assert code == 2
    _one_error_line(err)
    disk.free()
    assert np.array_equal(TextAE.load(out).embed(["the cat sat on the mat."]), before)
    assert sorted(p.name for p in disk.root.iterdir()) == ["export"]  # no half-built folder left beside it


def test_embed_to_a_full_disk_leaves_the_previous_file(cli, disk: FullDisk, trained_export: Path, tiny_corpus: Path) -> None:
    out = disk.root / "vectors.npy"
    code, _, err = cli("embed", trained_export, tiny_corpus, "--out", out)
    assert code == 0, err
    before = out.read_bytes()
    disk.fill()
    code, _, err = cli("embed", trained_export, tiny_corpus, "--out", out)
    assert code == 2
    line = _one_error_line(err)
    assert "vectors.npy" in line
    disk.free()
    assert out.read_bytes() == before and sorted(p.name for p in disk.root.iterdir()) == ["vectors.npy"]
