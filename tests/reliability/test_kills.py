"""SIGKILL `textae train`, `export` and `embed` at named moments and check what survives (see
benchmarks/bench_faults.py for the 20-kill benchmark on a real corpus)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_faults import Kill, TrainTrials, textae, train_with_kills, unreadable_files

TRAIN = ["--vocab-size", "400", "--batch-size", "10", "--max-steps", "12", "--epochs", "100", "--embedding-dim", "16",
         "--hidden-size", "16", "--latent-dim", "8", "--checkpoint-every", "3", "--eval-every", "6", "--log-every", "2",
         "--dropout", "0.1", "--threads", "2", "--quiet"]  # fmt: skip
# three kills from a fixed seed: one before the first checkpoint (the case that used to break), one in
# the middle (a step, a checkpoint or best.pt half written, a validation), one after the last checkpoint
EARLY = [("write:config.json", 2), ("tokenizer", 1), ("write:tokenizer.json", 1), ("token_store", 1), ("step", 2)]
MIDDLE = [("step", 4), ("write:checkpoint.pt", 2), ("write:best.pt", 1), ("validate", 1)]
LATE = [("finish", 1), ("write:loss.png", 1), ("write:summary.json", 1)]


def _plan(seed: int) -> list[Kill]:
    rng = random.Random(seed)
    return [Kill(phase=phase, count=rng.randint(1, most)) for phase, most in (rng.choice(p) for p in (EARLY, MIDDLE, LATE))]


@pytest.mark.slow
def test_three_kills_resume_to_the_same_weights_bit_for_bit(cli, tiny_corpus: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    code, _, err = cli("train", tiny_corpus, "--out", reference, *TRAIN)
    assert code == 0, err
    trials = TrainTrials()
    kills = _plan(seed=0)
    unused = train_with_kills(["train", str(tiny_corpus), *TRAIN], tmp_path / "killed", kills, reference, trials)
    assert not trials.failures
    assert unused == [] and len(trials.records) == 3, [r.phase for r in trials.records]
    assert [r.phase for r in trials.records] == [k.phase for k in kills]  # each died where planned
    assert all(r.resumed_ok and not r.corrupt for r in trials.records)
    assert trials.runs_finished == 1 and trials.weight_differences == [0.0]


@pytest.mark.slow
def test_resume_before_the_first_checkpoint_starts_over_with_the_saved_options(tiny_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    killed = textae(["train", str(tiny_corpus), "--out", str(run), *TRAIN], Kill(phase="token_store"))
    assert killed.killed and (run / "config.json").is_file() and (run / "tokenizer.json").is_file()
    assert not (run / "checkpoint.pt").exists() and unreadable_files(run) == []
    again = textae(["train", str(tiny_corpus), "--out", str(run), *TRAIN])  # the same command again
    assert again.returncode == 2 and f"continue it with: textae train --resume --out {run}" in again.stderr
    resumed = textae(["train", "--resume", "--out", str(run), "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert "restarting" in resumed.stderr and (run / "summary.json").is_file()
    assert not [p for p in (run / "tokens").iterdir() if p.name.endswith(".building")]


def test_resume_of_a_run_killed_before_it_saved_anything_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    outcome = textae(["train", "--resume", "--out", str(tmp_path / "run")])
    assert outcome.returncode == 2
    assert outcome.stderr.strip().startswith("textae: error: ") and "start one with: textae train CORPUS" in outcome.stderr


@pytest.mark.slow
def test_killed_export_and_embed_leave_the_previous_output_or_none(trained_run: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    from textae.runtime.model import TextAE

    export = tmp_path / "export"
    assert textae(["export", str(trained_run), "--out", str(export)]).returncode == 0
    before = TextAE.load(export).embed(["the cat sat on the mat."])
    for phase in ("write:textae.json", "export:replace"):
        outcome = textae(["export", str(trained_run), "--out", str(export)], Kill(phase=phase))
        assert outcome.killed
        assert np.array_equal(TextAE.load(export).embed(["the cat sat on the mat."]), before)  # the old one, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export.")]  # the killed builds, until ...
    assert textae(["export", str(trained_run), "--out", str(export)]).returncode == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".export.")]  # ... the next export

    for name in ("vectors.npy", "vectors.jsonl"):
        out = tmp_path / name
        killed = textae(["embed", str(export), str(tiny_corpus), "--out", str(out)], Kill(phase=f"write:{name}"))
        assert killed.killed and not out.exists()  # nothing under the final name
        assert textae(["embed", str(export), str(tiny_corpus), "--out", str(out)]).returncode == 0
        complete = out.read_bytes()
        assert textae(["embed", str(export), str(tiny_corpus), "--out", str(out)], Kill(phase=f"write:{name}")).killed
        assert out.read_bytes() == complete  # the earlier complete file survives
