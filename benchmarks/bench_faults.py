"""Kill -9 trials: SIGKILL `textae train`, `export` and `embed` at random moments, then check what is left.

    python benchmarks/bench_faults.py /work/shared/data/corpora/fortunes.txt            # N = 20 train kills
    python benchmarks/bench_faults.py tests-corpus.txt --quick                          # smoke run, ~1 minute

Train: one uninterrupted run gives the reference weights and its wall time T. Then each kill starts
(or resumes, with `textae train --resume --out RUN`) the run and SIGKILLs it, either after a random
delay drawn uniformly from [0, T) ("time" kills, seeded), or at the Nth time it reaches a named phase
("phase" kills, textae.faults: tokenizer, token store, a step, a validation, each file's atomic
write, the final summary), alternating. After every kill every file in the run folder must be
readable (JSON parses, .pt loads with weights_only=True, the tokenizer and token store open, the
PNG is whole). A run that finishes is compared with the reference, bit for bit, and the next kill
starts a new run. Export and embed: the same, and the destination must hold either nothing, the
previous complete output or the new complete one.

The functions here are also used by tests/reliability/test_kills.py (3 kills on a tiny corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# named moments a phase kill picks from, with how many times each is reached at most per process
TRAIN_PHASES = [
    ("start", 1), ("write:config.json", 2), ("tokenizer", 1), ("write:tokenizer.json", 1), ("token_store", 1),
    ("step", 40), ("write:metrics.jsonl", 1), ("validate", 3), ("write:best.pt", 3), ("write:checkpoint.pt", 4),
    ("finish", 1), ("write:loss.png", 1), ("write:summary.json", 1),
]  # fmt: skip
EXPORT_PHASES = [("write:textae.json", 1), ("export:replace", 1)]
STARTUP = "startup (imports, before train())"
KILLS_PER_RUN = 3  # kills before a run may finish; the next kills go to a new run


@dataclass
class Kill:
    """One planned kill: after `delay` seconds, or at the `count`-th time `phase` is reached."""

    delay: float | None = None
    phase: str | None = None
    count: int = 1

    def describe(self) -> str:
        return f"after {self.delay:.2f} s" if self.delay is not None else f"at {self.phase} #{self.count}"


@dataclass
class Outcome:
    killed: bool
    returncode: int
    phase: str  # the last phase the process reached (from its trace)
    stderr: str
    seconds: float


def textae(args: list[str], kill: Kill | None = None, *, env: dict[str, str] | None = None, timeout: float = 900) -> Outcome:
    """Run `python -m textae ARGS` in a fresh process, SIGKILLing it as planned."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace"
        full_env = {**os.environ, **(env or {}), "TEXTAE_PHASE_TRACE": str(trace), "PYTHONPATH": str(ROOT)}
        full_env.pop("TEXTAE_KILL_AT", None)
        if kill is not None and kill.phase is not None:
            full_env["TEXTAE_KILL_AT"] = f"{kill.phase}:{kill.count}"
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "textae", *args], env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            wait = kill.delay if kill is not None and kill.delay is not None else timeout
            _, stderr = process.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            _, stderr = process.communicate()
        seconds = time.perf_counter() - started
        lines = trace.read_text().splitlines() if trace.exists() else []
    return Outcome(process.returncode == -signal.SIGKILL, process.returncode, lines[-1] if lines else STARTUP, stderr, seconds)


# --- what a kill may leave -------------------------------------------------------------------


def is_leftover(path: Path) -> bool:
    """Not a finished file under its name: an interrupted atomic write or build, cleaned up later."""
    return any(part.endswith((".tmp", ".building", ".partial", ".old")) for part in path.parts)


def unreadable_files(run_dir: Path) -> list[str]:
    """Every finished file of a run folder that does not open as what its name says."""
    import numpy as np
    import torch

    from textae.tokenizer import load_tokenizer
    from textae.training.data import open_token_store

    problems = []
    if not run_dir.exists():
        return problems
    for path in sorted(run_dir.rglob("*")):
        if is_leftover(path.relative_to(run_dir)) or path.is_dir():
            continue
        try:
            if path.suffix == ".json" and path.name != "tokenizer.json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".jsonl":
                for line in path.read_text(encoding="utf-8").splitlines():
                    json.loads(line)
            elif path.suffix == ".pt":
                torch.load(path, map_location="cpu", weights_only=True)
            elif path.name == "tokenizer.json":
                load_tokenizer(path)
            elif path.suffix == ".png":
                data = path.read_bytes()
                if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")):
                    raise ValueError("not a whole PNG")
            elif path.name == "meta.json" or path.suffix in (".npy", ".bin"):
                pass  # the token store is checked as a whole below
        except Exception as exc:  # noqa: BLE001 - any failure to read is what we count
            problems.append(f"{path.relative_to(run_dir)}: {type(exc).__name__}: {str(exc)[:120]}")
    for store in sorted((run_dir / "tokens").glob("*")) if (run_dir / "tokens").is_dir() else []:
        if is_leftover(store.relative_to(run_dir)):
            continue
        try:
            json.loads((store / "meta.json").read_text())
            train, valid = open_token_store(store)
            for corpus in (train, valid):
                for index in range(len(corpus)):
                    if len(corpus.sentence(index)) != corpus.lengths[index]:
                        raise ValueError(f"sentence {index} is cut short")
            np.asarray(train.offsets)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{store.relative_to(run_dir)}: {type(exc).__name__}: {str(exc)[:120]}")
    return problems


def max_weight_difference(run_a: Path, run_b: Path) -> float:
    import torch

    a = torch.load(run_a / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(run_b / "checkpoint.pt", weights_only=True)["model"]
    if a.keys() != b.keys():
        return float("inf")
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


# --- train ---------------------------------------------------------------------------------------


@dataclass
class KillRecord:
    kill: str
    phase: str
    corrupt: list[str]
    resumed_ok: bool  # the next process (resume, or the original command) did not fail
    restarted_with_original_command: bool  # killed before anything was saved: --resume cannot know the corpus


@dataclass
class TrainTrials:
    records: list[KillRecord] = field(default_factory=list)
    runs_finished: int = 0
    weight_differences: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def train_with_kills(train_args: list[str], run_dir: Path, kills: list[Kill], reference: Path, trials: TrainTrials) -> list[Kill]:
    """One run of `textae train TRAIN_ARGS --out RUN_DIR`, killed as planned and resumed until it
    finishes; returns the kills left unused because the run finished before them."""
    pending = list(kills)
    first = True
    while True:
        kill = pending.pop(0) if pending else None
        if first:
            args = [*train_args, "--out", str(run_dir)]
        elif (run_dir / "config.json").is_file():
            args = ["train", "--resume", "--out", str(run_dir), "--quiet"]
        else:  # killed before it saved anything: --resume cannot know the corpus, the original command can
            args = [*train_args, "--out", str(run_dir)]
            trials.records[-1].restarted_with_original_command = True
        outcome = textae(args, kill)
        if not first:
            trials.records[-1].resumed_ok = outcome.killed or outcome.returncode == 0
        first = False
        if outcome.killed:
            assert kill is not None
            corrupt = unreadable_files(run_dir)
            trials.records.append(KillRecord(kill.describe(), outcome.phase, corrupt, False, False))
            trials.failures.extend(f"after kill {kill.describe()}: {problem}" for problem in corrupt)
            continue
        if kill is not None:
            pending.insert(0, kill)
        if outcome.returncode != 0:
            trials.failures.append(f"{' '.join(args[:2])} exit {outcome.returncode}: {outcome.stderr.strip()[-300:]}")
            return pending
        trials.runs_finished += 1
        trials.weight_differences.append(max_weight_difference(reference, run_dir))
        if not (run_dir / "summary.json").is_file():
            trials.failures.append(f"{run_dir}: finished without summary.json")
        return pending


def train_trials(train_args: list[str], work: Path, n: int, seed: int, mode: str) -> tuple[TrainTrials, float]:
    """n kills spread over as many runs as they need; returns the trials and the reference wall time."""
    reference = work / "reference"
    outcome = textae([*train_args, "--out", str(reference)])
    if outcome.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed: {outcome.stderr.strip()[-500:]}")
    duration = outcome.seconds
    rng = random.Random(seed)
    kills = []
    for index in range(n):
        if mode == "time" or (mode == "mixed" and index % 2 == 0):
            kills.append(Kill(delay=rng.uniform(0.0, duration)))
        else:
            phase, most = rng.choice(TRAIN_PHASES)
            kills.append(Kill(phase=phase, count=rng.randint(1, most)))
    trials = TrainTrials()
    run_number = 0
    while kills and not trials.failures:
        run_number += 1
        batch, kills = kills[:KILLS_PER_RUN], kills[KILLS_PER_RUN:]
        unused = train_with_kills(train_args, work / f"run-{run_number}", batch, reference, trials)
        if len(unused) == len(batch):
            unused = unused[1:]  # a moment a run never reaches (a phase count too high): drop it
        kills = unused + kills
    return trials, duration


# --- export and embed -------------------------------------------------------------------------


def export_trials(run_dir: Path, work: Path, n: int, seed: int) -> dict[str, Any]:
    """Kill `textae export RUN --out EXPORT` n times (over an earlier export); EXPORT must always load."""
    from textae.errors import TextaeError
    from textae.runtime.model import TextAE

    out = work / "export"
    first = textae(["export", str(run_dir), "--out", str(out)])
    if first.returncode != 0:
        raise SystemExit(f"export failed: {first.stderr.strip()[-500:]}")
    rng = random.Random(seed)
    result: dict[str, Any] = {"kills": 0, "destination_not_loadable": 0, "leftover_builds": 0, "phases": [], "failures": []}
    for index in range(n):
        if index % 2 == 0:
            kill = Kill(delay=rng.uniform(0.0, first.seconds))
        else:
            phase, most = rng.choice(EXPORT_PHASES)
            kill = Kill(phase=phase, count=rng.randint(1, most))
        outcome = textae(["export", str(run_dir), "--out", str(out)], kill)
        if not outcome.killed:
            continue
        result["kills"] += 1
        result["phases"].append(outcome.phase if outcome.phase != STARTUP else "startup")
        try:
            TextAE.load(out)
        except TextaeError as exc:
            result["destination_not_loadable"] += 1
            result["failures"].append(f"after kill {kill.describe()}: {exc}")
        result["leftover_builds"] += sum(1 for entry in work.iterdir() if entry.name.startswith(".export."))
    final = textae(["export", str(run_dir), "--out", str(out)])
    result["final_export_ok"] = final.returncode == 0 and not any(e.name.startswith(".export.") for e in work.iterdir())
    return result


def embed_trials(export_dir: Path, text: Path, work: Path, n: int, seed: int) -> dict[str, Any]:
    """Kill `textae embed` n times over an earlier complete output: the file under the final name is
    always the earlier one or the new complete one."""
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"kills": 0, "partial_outputs": 0, "failures": []}
    rng = random.Random(seed)
    for suffix in (".npy", ".jsonl"):
        out = work / f"vectors{suffix}"
        first = textae(["embed", str(export_dir), str(text), "--out", str(out)])
        if first.returncode != 0:
            raise SystemExit(f"embed failed: {first.stderr.strip()[-500:]}")
        complete = out.read_bytes()
        for index in range(n // 2 if suffix == ".npy" else n - n // 2):
            kill = Kill(delay=rng.uniform(0.0, first.seconds)) if index % 2 == 0 else Kill(phase=f"write:{out.name}")
            outcome = textae(["embed", str(export_dir), str(text), "--out", str(out)], kill)
            if not outcome.killed:
                continue
            result["kills"] += 1
            data = out.read_bytes() if out.exists() else b""
            if data != complete:
                result["partial_outputs"] += 1
                result["failures"].append(f"{out.name} after kill {kill.describe()}: {len(data)} bytes, expected {len(complete)}")
            elif suffix == ".npy":
                np.load(out)
    return result


# --- report --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="a real corpus, one sentence a line")
    parser.add_argument("--n", type=int, default=20, help="train kills")
    parser.add_argument("--export-n", type=int, default=6, help="export kills")
    parser.add_argument("--embed-n", type=int, default=6, help="embed kills")
    parser.add_argument("--mode", choices=("mixed", "time", "phase"), default="mixed", help="how kill moments are chosen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300, help="training steps of each run")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 4 train kills, 2 export, 2 embed, 40 steps")
    parser.add_argument("--work", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.export_n, args.embed_n, args.steps = 4, 2, 2, 40
    checkpoint_every = max(1, args.steps // 6)
    train_args = [
        "train", str(args.corpus), "--vocab-size", "2000", "--embedding-dim", "64", "--hidden-size", "128",
        "--latent-dim", "64", "--batch-size", "64", "--max-steps", str(args.steps), "--epochs", "1000",
        "--checkpoint-every", str(checkpoint_every), "--eval-every", str(2 * checkpoint_every),
        "--log-every", str(max(1, checkpoint_every // 2)), "--dropout", "0.1", "--threads", "2", "--quiet",
    ]  # fmt: skip
    work = args.work or Path(tempfile.mkdtemp(prefix="textae-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        trials, duration = train_trials(train_args, work / "train", args.n, args.seed, args.mode)
        print(f"train: uninterrupted run {duration:.1f} s ({args.steps} steps on {args.corpus.name})")
        print(f"{'kill':<28} {'phase reached':<22} {'corrupt files':>13} {'next run ok':>11}")
        for record in trials.records:
            print(f"{record.kill:<28} {record.phase:<22} {len(record.corrupt):>13} {record.resumed_ok!s:>11}"
                  + ("  (restarted with the original command)" if record.restarted_with_original_command else ""))  # fmt: skip
        phases = sorted({r.phase for r in trials.records})
        print(f"kills {len(trials.records)}, resumes ok {sum(r.resumed_ok for r in trials.records)}, "
              f"corrupt files found {sum(len(r.corrupt) for r in trials.records)}, runs finished {trials.runs_finished}, "
              f"max weight difference {max(trials.weight_differences, default=float('nan')):.3g}")  # fmt: skip
        print(f"phases hit ({len(phases)}): {', '.join(phases)}")
        reference = work / "train" / "reference"
        exports = export_trials(reference, work / "export", args.export_n, args.seed)
        print(f"export: kills {exports['kills']}, destination not loadable {exports['destination_not_loadable']}, "
              f"leftover build folders seen {exports['leftover_builds']} (removed by the next export: "
              f"{exports['final_export_ok']}), phases {', '.join(exports['phases'])}")  # fmt: skip
        embeds = embed_trials(work / "export" / "export", args.corpus, work / "embed", args.embed_n, args.seed)
        print(f"embed: kills {embeds['kills']}, partial outputs under the final name {embeds['partial_outputs']}")
        failures = trials.failures + exports["failures"] + embeds["failures"]
        for failure in failures:
            print(f"FAILED: {failure}")
        if failures or any(d != 0.0 for d in trials.weight_differences):
            sys.exit(1)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
