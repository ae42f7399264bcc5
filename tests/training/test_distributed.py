"""Two-process CPU training under torchrun (gloo): ranks stay in sync, a killed run resumes, and it exports."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

SMALL = ["--vocab-size", "400", "--batch-size", "8", "--embedding-dim", "32", "--hidden-size", "32",
         "--latent-dim", "16", "--epochs", "1000", "--patience", "0", "--eval-every", "20", "--log-every", "5", "--quiet", "--threads", "1"]  # fmt: skip


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "textae", *args]


def processes_naming(path: Path) -> list[int]:
    """Live processes whose command line names path (Linux's /proc; elsewhere, none are seen)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(path).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # it ended while we looked
            continue
    return found


def test_two_process_training_stays_in_sync_and_exports(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    result = subprocess.run(
        torchrun("train", str(tiny_corpus), "--out", str(run_dir), "--max-steps", "12", *SMALL),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["ranks_in_sync"] is True and summary["steps"] == 12
    train_steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]
    assert train_steps == [5, 10]  # rank 0's records only, one per --log-every 5 steps
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["training_state"]["world_size"] == 2
    export = pytest.importorskip("textae.export.folder")
    export.export_model(run_dir, tmp_path / "exported")
    assert (tmp_path / "exported" / "textae.json").is_file()


def test_a_killed_distributed_run_resumes(tiny_corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    args = ["--out", str(run_dir), "--max-steps", "400", "--checkpoint-every", "2", *SMALL]
    process = subprocess.Popen(torchrun("train", str(tiny_corpus), *args), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    checkpoint = run_dir / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole torchrun process group, as a crash would
    process.wait()
    # torchrun starts its workers in sessions of their own, out of reach of that kill: they must
    # notice their launcher is gone and exit, or they train on beside the resumed run
    deadline = time.monotonic() + 30
    while processes_naming(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_naming(run_dir), "torchrun's workers outlived it"
    step = torch.load(checkpoint, weights_only=True)["training_state"]["step"]
    assert 0 < step < 400, "the run finished before it could be killed"
    assert not (run_dir / "summary.json").exists()
    result = subprocess.run(torchrun("train", "--resume", "--out", str(run_dir), "--quiet"),
                            capture_output=True, text=True, timeout=400, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 400 and summary["ranks_in_sync"] is True


def test_resuming_with_another_process_count_is_refused(tiny_corpus: Path, tmp_path: Path, cli) -> None:
    run_dir = tmp_path / "two"
    result = subprocess.run(torchrun("train", str(tiny_corpus), "--out", str(run_dir), "--max-steps", "2", *SMALL),
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir / "summary.json").unlink()
    code, _, err = cli("train", "--resume", "--out", str(run_dir))
    assert code == 2 and "was trained with 2 process(es)" in err
