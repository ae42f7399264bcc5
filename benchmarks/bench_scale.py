"""Memory against corpus size, and two processes against one.

    python benchmarks/bench_scale.py CORPUS [--small 100000] [--large 1000000] [--steps 40]

In one run:
  1. writes a --small and a --large line file by repeating CORPUS (a real corpus);
  2. peak RSS of `textae train` on each (tokenizer, token store, --steps steps of a small model);
  3. peak RSS of `textae embed` of each into .npy with a model exported from the small run;
  4. training tokens/s of 1 process x 1 thread against 2 processes x 1 thread under torchrun (gloo).
Prints a table and the ratios against the targets: peak RSS at --large <= 1.1x that at --small for
both commands; 2 processes >= 1.6x one process's tokens/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

# Report the peak RSS of the command it runs (its children included, e.g. torchrun's workers).
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)
SMALL_MODEL = ["--vocab-size", "2000", "--embedding-dim", "64", "--hidden-size", "128", "--latent-dim", "64",
               "--batch-size", "64", "--quiet", "--patience", "0", "--eval-every", "1000000"]  # fmt: skip


def repeat_lines(source: Path, target: Path, count: int) -> None:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(target, "w", encoding="utf-8") as handle:
        for line in itertools.islice(itertools.cycle(lines), count):
            handle.write(line + "\n")


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a command run in a fresh process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return int(result.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - start


def tokens_per_second(run_dir: Path) -> float:
    rates = [r["tokens_per_second"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if r["type"] == "train"]  # fmt: skip
    return statistics.median(rates[1:])  # the first window includes warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    # enough steps that both runs meet their longest batches: peak RSS is set by the largest batch
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ddp-steps", type=int, default=30)
    parser.add_argument("--ddp-only", action="store_true", help="skip the memory measurements")
    args = parser.parse_args()
    console = Console()
    textae = [sys.executable, "-m", "textae"]
    work = Path(tempfile.mkdtemp(prefix="textae-scale-"))
    rows = {}
    repeat_lines(args.corpus, work / "small.txt", args.small)
    for name, count in () if args.ddp_only else (("small", args.small), ("large", args.large)):
        corpus = work / f"{name}.txt"
        if name == "large":
            repeat_lines(args.corpus, corpus, count)
        run_dir = work / f"run-{name}"
        train_rss, train_seconds = peak_rss_mb(
            [*textae, "train", str(corpus), "--out", str(run_dir), "--max-steps", str(args.steps), "--threads", "2", *SMALL_MODEL]
        )
        if name == "small":
            subprocess.run([*textae, "export", str(run_dir), "--out", str(work / "model")], check=True, capture_output=True)
        embed_rss, embed_seconds = peak_rss_mb(
            [*textae, "embed", str(work / "model"), str(corpus), "--out", str(work / f"{name}.npy"), "--threads", "2"]
        )
        rows[name] = (count, train_rss, train_seconds, embed_rss, embed_seconds)

    ddp = {}
    for processes in (1, 2):
        run_dir = work / f"ddp-{processes}"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "textae"]
        # the default model: with a tiny one, per-step overheads (not compute) would be measured
        subprocess.run(
            [*launcher, "train", str(work / "small.txt"), "--out", str(run_dir), "--max-steps", str(args.ddp_steps),
             "--threads", "1", "--log-every", "5", "--quiet", "--eval-every", "1000000", "--patience", "0"],
            check=True, capture_output=True,
        )  # fmt: skip
        ddp[processes] = tokens_per_second(run_dir)

    if rows:
        print_memory(console, rows)
    speedup = ddp[2] / ddp[1]
    console.print(
        f"training tokens/s, default model, 1 thread per process: 1 process {ddp[1]:,.0f}, 2 processes {ddp[2]:,.0f}: "
        f"{speedup:.2f}x (target >= 1.6x: {'met' if speedup >= 1.6 else 'NOT met'})"
    )
    console.print(f"(work files in {work})")


def print_memory(console: Console, rows: dict) -> None:
    table = Table(title="textae memory against corpus size (small model, peak RSS of the whole process)")
    for column in ("lines", "train peak RSS (MB)", "train s", "embed peak RSS (MB)", "embed s"):
        table.add_column(column, justify="right")
    for count, train_rss, train_seconds, embed_rss, embed_seconds in rows.values():
        table.add_row(f"{count:,}", f"{train_rss:,.0f}", f"{train_seconds:.0f}", f"{embed_rss:,.0f}", f"{embed_seconds:.0f}")
    console.print(table)
    train_ratio = rows["large"][1] / rows["small"][1]
    embed_ratio = rows["large"][3] / rows["small"][3]
    console.print(f"train peak RSS large/small: {train_ratio:.2f}x (target <= 1.1x: {'met' if train_ratio <= 1.1 else 'NOT met'})")
    console.print(f"embed peak RSS large/small: {embed_ratio:.2f}x (target <= 1.1x: {'met' if embed_ratio <= 1.1 else 'NOT met'})")


if __name__ == "__main__":
    main()
