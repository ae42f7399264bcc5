"""Fuzz benchmark: run every property of tests/reliability/test_fuzz.py with many examples and report counts.

    python benchmarks/bench_fuzz.py                  # 10,000 examples per property (tens of minutes)
    python benchmarks/bench_fuzz.py --examples 200   # smoke run

Runs pytest with TEXTAE_FUZZ_EXAMPLES set and hypothesis' statistics on, then prints one row per
property: examples that passed, failed and were invalid (filtered), and the time taken.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples per property")
    args = parser.parse_args()
    env = {**os.environ, "TEXTAE_FUZZ_EXAMPLES": str(args.examples), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "tests/reliability/test_fuzz.py", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    rows = []
    current = None
    for line in result.stdout.splitlines():
        header = re.match(r"\s*tests/reliability/test_fuzz.py::(\w+):", line)
        if header:
            current = header.group(1)
        counts = re.search(r"(\d+) passing examples?, (\d+) failing examples?, (\d+) invalid examples?", line)
        if counts and current:
            rows.append([current, *map(int, counts.groups())])
        timing = re.search(r"Typical runtimes: (.*)", line)
        if timing and rows and rows[-1][0] == current and len(rows[-1]) == 4:
            rows[-1].append(timing.group(1).split(",")[0])
    print(f"hypothesis, {args.examples} examples per property (max_examples; generation stops early when a strategy is exhausted)")
    print(f"{'property':<62} {'passing':>8} {'failing':>8} {'invalid':>8}  typical runtime")
    for row in rows:
        print(f"{row[0]:<62} {row[1]:>8} {row[2]:>8} {row[3]:>8}  {row[4] if len(row) > 4 else ''}")
    summary = [line for line in result.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    print(summary[-1] if summary else result.stdout[-2000:])
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-2000:])
        sys.exit(result.returncode)


if __name__ == "__main__":
    main()
