"""textae on Ray against one process: lines/s, the Ray path's cost per line, memory per worker.

    python benchmarks/bench_ray.py MODEL CORPUS [--lines 100000] [--large 1000000] [--threads 2]

In one run, on this machine (meant for an otherwise idle one; the pip extra: textae[ray]):
  1. writes a --lines and a --large line file by repeating CORPUS's non-empty lines;
  2. today's `textae embed MODEL FILE --out x.npy --threads T` (a fresh process: start-up included);
  3. in-process `TextAE.embed` of the same lines with 1 and with T threads (the model's own rate);
  4. `textae.ray.embed_files` with 1 worker x 1 CPU and with T workers x 1 CPU on a local Ray of
     T CPUs started once: end to end (each job's actor start-up included, the cluster's excluded)
     and in the steady state (from the first Parquet part written to the last), sampling every
     actor's peak RSS (VmHWM), private memory (RssAnon) and object-store pages (RssShmem) from /proc;
  5. `textae embed ... --engine ray --workers T` (a fresh process that starts its own Ray);
  6. the T-worker job again on the --large file, for peak RSS per worker against corpus size.
Prints a table, the per-line overhead of the Ray path (steady state) against in-process embedding
of the same lines at the same CPUs, and the targets: Ray with T workers >= 0.8x today's T-thread
`textae embed` (end to end and steady state); private memory per worker at --large within 10 % of
that at --lines (peak RSS also counts the node's shared object-store pages an actor has read from).
Linux only (/proc). Start-up is seconds, so use --lines of 100,000 or more for figures.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

WORKER_TITLE = "ray::MapWorker"  # Ray names each actor process after its class (the job's PartWriter)
MEMORY_FIELDS = ("VmHWM", "RssAnon", "RssShmem")  # peak RSS; private pages; pages of the shared object store


def repeat_lines(source: Path, target: Path, count: int) -> None:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(target, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in itertools.islice(itertools.cycle(lines), count))


class WorkerMemory:
    """Samples the memory of this process's descendant Ray actors while a job runs.

    Two figures per actor: the kernel's VmHWM (peak RSS, a high-water mark) and the peak of its
    private memory, RssAnon, sampled every `interval` seconds. RSS also counts the pages of Ray's
    shared object store (RssShmem) that the actor has read blocks from: those are the node's, shared
    by every actor and bounded by the object store's size, and they grow with the blocks a long job
    passes through, so an actor's own memory is its private pages."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peaks: dict[str, dict[int, int]] = {field: {} for field in MEMORY_FIELDS}  # field -> pid -> peak kB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self, field: str = "VmHWM") -> float:
        return max(self.peaks[field].values(), default=0) / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in _descendants(os.getpid()):
                try:
                    if WORKER_TITLE in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                        for field, kb in _memory_kb(pid).items():
                            self.peaks[field][pid] = max(self.peaks[field].get(pid, 0), kb)
                except OSError:  # the process ended between the listing and the read
                    pass
            self._stop.wait(self.interval)


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _memory_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        field, _, rest = line.partition(":")
        if field in MEMORY_FIELDS:
            values[field] = int(rest.split()[0])
    return values


def ray_job(model: Path, source: Path, out: Path, workers: int, batch_lines: int) -> tuple[object, float, dict[str, float]]:
    """One embed_files job: its summary, its steady lines/s, and its workers' peak memory in MB per MEMORY_FIELDS.

    Steady state: the lines of every part but the first finished, over the time from that part's
    write to the last one's (the parts' mtimes), so actor start-up and the first batch are out."""
    import pyarrow.parquet as pq

    from textae.ray import RaySettings, embed_files

    settings = RaySettings(workers=workers, worker_cpus=1, batch_lines=batch_lines, progress=False)
    with WorkerMemory() as sampled:
        summary = embed_files(model, [str(source)], out, ray_settings=settings)
    parts = sorted(out.glob("part-*.parquet"), key=lambda path: path.stat().st_mtime_ns)
    span = (parts[-1].stat().st_mtime_ns - parts[0].stat().st_mtime_ns) / 1e9
    rows = summary.lines - pq.read_metadata(parts[0]).num_rows
    steady = rows / span if len(parts) > 1 and span > 0 else summary.lines / summary.seconds
    return summary, steady, {field: sampled.peak_mb(field) for field in MEMORY_FIELDS}


def timed_command(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="export folder")
    parser.add_argument("corpus", type=Path, help="text file whose lines are repeated")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000, help="lines of the memory run (0: skip it)")
    parser.add_argument("--threads", type=int, default=2, help="today's threads = Ray workers (1 CPU each) = the local Ray's CPUs")
    parser.add_argument("--batch-lines", type=int, default=4096)
    args = parser.parse_args()

    import numpy as np
    import pyarrow.parquet as pq
    import ray

    from textae.corpus import iter_file_lines
    from textae.runtime.model import TextAE

    console = Console()
    work = Path(tempfile.mkdtemp(prefix="textae-ray-bench-"))
    small = work / "small.txt"
    repeat_lines(args.corpus, small, args.lines)
    textae = [sys.executable, "-m", "textae"]
    threads = args.threads
    rows: list[tuple[str, float]] = []

    today = timed_command([*textae, "embed", str(args.model), str(small), "--out", str(work / "today.npy"), "--threads", str(threads)])
    rows.append((f"today: textae embed --threads {threads} (process start-up included)", today))

    lines = list(iter_file_lines(small))
    inprocess = {}
    for count in sorted({1, threads}):
        model = TextAE.load(args.model, num_threads=count)
        model.embed(lines[:256])  # warm-up: sessions created, first shapes seen
        start = time.perf_counter()
        model.embed(lines)
        inprocess[count] = time.perf_counter() - start
        rows.append((f"in-process TextAE.embed, {count} thread(s)", inprocess[count]))

    ray.init(num_cpus=threads, include_dashboard=False)
    memory, ray_seconds, steady = {}, {}, {}
    try:
        for workers in sorted({1, threads}):
            out = work / f"ray-{workers}"
            summary, steady[workers], memory[(workers, args.lines)] = ray_job(args.model, small, out, workers, args.batch_lines)
            ray_seconds[workers] = summary.seconds
            rows.append((f"Ray, {workers} worker(s) x 1 CPU (actor start-up included)", summary.seconds))
            rows.append((f"Ray, {workers} worker(s) x 1 CPU, steady state (first part to last)", len(lines) / steady[workers]))
            if workers == threads:
                got = np.stack(pq.read_table(out).column("embedding").to_numpy(zero_copy_only=False))
                console.print(f"Ray vs today's vectors: max |difference| {np.abs(got - np.load(work / 'today.npy')).max():.2e}")
            shutil.rmtree(out)
        if args.large:
            large = work / "large.txt"
            repeat_lines(args.corpus, large, args.large)
            *_, memory[(threads, args.large)] = ray_job(args.model, large, work / "ray-large", threads, args.batch_lines)
            shutil.rmtree(work / "ray-large")
    finally:
        ray.shutdown()

    cli_ray = timed_command([*textae, "embed", str(args.model), str(small), "--out", str(work / "cli-ray"),
                             "--engine", "ray", "--workers", str(threads)])  # fmt: skip
    rows.append((f"textae embed --engine ray --workers {threads} (starts its own Ray)", cli_ray))

    table = Table(title=f"embedding {len(lines):,} lines with {args.model} on {threads} CPU(s)")
    for column in ("engine", "seconds", "lines/s", "vs today"):
        table.add_column(column, justify="right" if column != "engine" else "left")
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.2f}", f"{len(lines) / seconds:,.0f}", f"{today / seconds:.2f}x")
    console.print(table)

    for workers in sorted({1, threads}):
        # the steady state's time per line against the model's own: what the Ray path adds per line
        overhead = (1 / steady[workers] - inprocess[workers] / len(lines)) * 1e6
        console.print(f"Ray path overhead per line, {workers} worker(s) vs in-process at {workers} thread(s): {overhead:,.1f} us "
                      f"(steady state; {ray_seconds[workers] - inprocess[workers]:.1f} s more end to end)")  # fmt: skip
    for label, ratio in (("end to end", today / ray_seconds[threads]), ("steady state", steady[threads] * today / len(lines))):
        console.print(f"Ray {threads} workers vs today's {threads}-thread textae embed, {label}: {ratio:.2f}x "
                      f"(target >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'})")  # fmt: skip
    for (workers, count), peaks in sorted(memory.items(), key=lambda item: item[0]):
        console.print(f"per worker, {workers} worker(s), {count:,} lines: peak RSS {peaks['VmHWM']:,.0f} MB = private "
                      f"{peaks['RssAnon']:,.0f} MB + object-store pages up to {peaks['RssShmem']:,.0f} MB (+ mapped files)")  # fmt: skip
    if args.large:
        small_peaks, large_peaks = memory[(threads, args.lines)], memory[(threads, args.large)]
        rss, private = (large_peaks[field] / small_peaks[field] for field in ("VmHWM", "RssAnon"))
        # the target is the worker's own memory: the object store's pages are the node's, shared by
        # every actor and bounded by the store's size (ray start --object-store-memory)
        console.print(f"private memory per worker {args.large:,} vs {args.lines:,} lines: {private:.3f}x "
                      f"(target <= 1.1x: {'met' if private <= 1.1 else 'NOT met'}); peak RSS with the shared pages: {rss:.3f}x")  # fmt: skip
    console.print(f"(work files in {work})")


if __name__ == "__main__":
    main()
