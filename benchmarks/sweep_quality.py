"""Sweep textae's settings at a fixed time budget with bench_quality.py, and print the table.

    python benchmarks/sweep_quality.py --data ../shared/data --time-budget 30m --work runs/sweep
    python benchmarks/sweep_quality.py --data ../shared/data --work runs/sweep --table   # table only
    python benchmarks/sweep_quality.py ... --only defaults hidden-768 --variant "wide:hidden_size=1024,latent_dim=512"

Each variant is one bench_quality.py run that changes a few ModelConfig/TrainConfig fields from
today's defaults (one factor at a time, plus any --variant combination), trained for the same
--time-budget on the same split, and written to WORK/NAME.json. Only the "defaults" run trains
the baselines (Doc2Vec, TF-IDF + SVD); the others pass --no-baselines. A variant whose JSON
exists is not run again, so an interrupted sweep continues where it stopped; every run holds
/tmp/textae-bench.lock, so the sweep never overlaps another benchmark on the machine.

The table has, per variant: steps reached in the budget, held-out exact match, STS-B dev, SICK
trial, probe average of the sentence vector and of the encoder features, anomaly AUROC, and the
share of generated sentences that are new and reconstruct themselves. Choose defaults from it
by more than STS-B dev: the vectors are also judged on test sets this sweep does not see.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent / "bench_quality.py"
LOCK = Path("/tmp/textae-bench.lock")

# name -> settings; one factor at a time from the defaults (what issue 13 asks to sweep)
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "hidden-768": {"hidden_size": 768},
    "hidden-1024": {"hidden_size": 1024},
    "latent-512": {"latent_dim": 512},
    "layers-2": {"num_layers": 2},
    "bidirectional": {"bidirectional": True},
    "lr-1e-3": {"learning_rate": 1e-3},
    "lr-4e-3": {"learning_rate": 4e-3},
    "warmup-500": {"warmup_steps": 500},
    "lr-constant": {"lr_schedule": "constant"},
    "batch-64": {"batch_size": 64},
    "batch-256": {"batch_size": 256},
    "teacher-forcing-only": {"teacher_forcing_end": 1.0},
    "teacher-forcing-to-0.5": {"teacher_forcing_end": 0.5},
    "teacher-forcing-inverse-sigmoid": {"teacher_forcing_schedule": "inverse_sigmoid"},
    "vocab-4000": {"vocab_size": 4000},
    "vocab-16000": {"vocab_size": 16000},
    "optimizer-sgd": {"optimizer": "sgd"},
    "pooling-mean": {"pooling": "mean"},
    "denoising": {"noise": "delete:0.1,swap:0.1,mask:0.1"},
}

COLUMNS = [
    ("steps", lambda r: r["textae"].get("steps")),
    ("exact %", lambda r: r["exact_reconstruction"]),
    ("STS-B dev", lambda r: r["results"]["textae"]["STS-B dev"]),
    ("SICK trial", lambda r: r["results"]["textae"]["SICK trial"]),
    ("probes, vector", lambda r: r["results"]["textae"]["probe average"]),
    ("probes, features", lambda r: r["results"].get("textae features", {}).get("probe average")),
    ("AUROC", lambda r: r["anomaly"]["auroc"]),
    ("generated new+self %", lambda r: (r.get("generation") or {}).get("new_and_reconstruct_themselves")),
]


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """ "wide:hidden_size=1024,latent_dim=512" -> ("wide", {"hidden_size": "1024", "latent_dim": "512"})."""
    name, sep, body = text.partition(":")
    pairs = [part.split("=", 1) for part in body.split(",") if part.strip()]
    if not sep or not name or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"--variant needs NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    return name, {key.strip(): value.strip() for key, value in pairs}


def bench_command(args: argparse.Namespace, name: str, settings: dict[str, Any]) -> list[str]:
    command = [sys.executable, str(BENCH), "--data", str(args.data), "--time-budget", args.time_budget,
               "--work", str(args.work / name), "--json", str(args.work / f"{name}.json"), "--quiet", *args.bench_args]  # fmt: skip
    if name != "defaults":
        command.append("--no-baselines")
    for key, value in settings.items():
        command += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return command


def run_variant(args: argparse.Namespace, name: str, settings: dict[str, Any]) -> None:
    result = args.work / f"{name}.json"
    if result.is_file():
        print(f"sweep: {name}: {result} exists, not run again", flush=True)
        return
    command = bench_command(args, name, settings)
    print(f"sweep: {name}: {' '.join(command)}", flush=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one benchmark at a time on this machine
        done = subprocess.run(command, check=False)
    if done.returncode != 0:
        print(f"sweep: {name}: bench_quality.py exited with {done.returncode}", file=sys.stderr, flush=True)


def print_table(args: argparse.Namespace, names: list[str]) -> None:
    rows = []
    baselines: dict[str, dict[str, float]] = {}
    for name in names:
        path = args.work / f"{name}.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        rows.append((name, record))
        baselines.update({method: scores for method, scores in record["results"].items() if not method.startswith("textae")})
    header = ["variant", *(title for title, _ in COLUMNS)]
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * len(COLUMNS))
    for name, record in rows:
        cells = []
        for _, get in COLUMNS:
            try:
                value = get(record)
            except (KeyError, TypeError):
                value = None
            cells.append("" if value is None else f"{value:.4f}" if isinstance(value, float) and value < 1.5 else f"{value:.1f}" if isinstance(value, float) else str(value))
        print(f"| {name} | " + " | ".join(cells) + " |")
    for method, scores in baselines.items():
        print(f"| {method} | | | {scores['STS-B dev']:.1f} | {scores['SICK trial']:.1f} | {scores['probe average']:.1f} | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (corpora/, sts/, probe/)")
    parser.add_argument("--time-budget", default="30m", help="training time of every variant")
    parser.add_argument("--work", type=Path, default=Path("runs/sweep"), help="one folder and one JSON per variant")
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME", help=f"run these variants only (of {', '.join(VARIANTS)})")
    parser.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="NAME:KEY=VALUE,...", help="add a variant")
    parser.add_argument("--table", action="store_true", help="print the table of the finished variants; run nothing")
    parser.add_argument("--bench-args", nargs=argparse.REMAINDER, default=[], help="passed to bench_quality.py as they are (last)")
    args = parser.parse_args()
    variants = {**VARIANTS, **dict(args.variant)}
    names = args.only if args.only is not None else list(variants)
    unknown = [name for name in names if name not in variants]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(variants)}")
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for name in names:
            run_variant(args, name, variants[name])
    print_table(args, names)


if __name__ == "__main__":
    main()
