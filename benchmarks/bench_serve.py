"""Load-test `textae serve` on 127.0.0.1 against in-process TextAE.embed, side by side in one run.

    python benchmarks/bench_serve.py export/python-docs ../shared/data/corpora/tatoeba.txt --duration 20
    python benchmarks/bench_serve.py MODEL SENTENCES --quick          # a smoke run of a few seconds

Starts the server as a uvicorn subprocess (`python -m textae serve`), drives it with bounded async
clients (a lean keep-alive HTTP/1.1 client, see Connection) for a fixed duration per scenario, then stops them, and prints one table:

  - in-process `TextAE.embed` at batch 64 on the same sentences and precision (the reference);
  - 1 / 4 / 16 / 64 concurrent clients sending one-sentence requests;
  - 16 clients sending 32-sentence requests;
  - 16 one-sentence clients against a second server started with --max-batch-size 1;
  - a soak (--soak seconds) of 16 clients sending 1-32 sentences of varied lengths, with the server's
    RSS when it first answers, after the warm-up traffic, and at the end;
  - an onnxruntime arena probe: RSS growth of the encoder over many distinct batch shapes with
    bucketed widths, for the arena settings onnxruntime offers (each in a fresh process).

Per scenario: requests/s, sentences/s, p50/p95/p99 latency, errors by status, mean batch size (from
/metrics) and where a request's time goes (x-queue-time, x-inference-time, the rest: HTTP, JSON,
tokenization, the event loop). Targets: 16x32 >= 60 % of in-process sentences/s; 16x1 >= 3x the
--max-batch-size 1 server; soak RSS growth after warm-up <= 10 %. The client runs on the same
machine as the server, so give the server --threads fewer than the cores to leave the client some.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from textae.runtime import TextAE
from textae.serve.settings import available_cores

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    name: str
    seconds: float
    requests: int = 0
    sentences: int = 0
    latencies: list[float] = field(default_factory=list)  # ms
    queue_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    mean_batch: float | None = None

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, model: str, threads: int, precision: str | None, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "textae", "serve", model, "--port", str(self.port), "--threads", str(threads), "--log-level", "warning"]
        if precision:
            command += ["--precision", precision]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen([*command, *options], env=env)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"bench_serve: the server exited with status {self.process.returncode}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("bench_serve: the server did not become ready")
            time.sleep(0.2)
        self.rss_start = rss_mb(self.process.pid)

    def batch_counts(self) -> tuple[float, float]:
        text = httpx.get(self.url + "/metrics").text
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("textae_batch_size_")}
        return values.get("textae_batch_size_sum", 0.0), values.get("textae_batch_size_count", 0.0)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


class Connection:
    """One keep-alive HTTP/1.1 connection that writes pre-encoded requests and reads one response.

    A load generator on the same two cores as the server takes CPU from it: an httpx AsyncClient
    spent 0.79 ms of client CPU per one-sentence /embed request where this client spends 0.09 ms
    (2,000 sequential requests each, time.process_time), so with httpx the benchmark measured httpx
    about as much as the server. Like wrk or oha, this client does no more than HTTP/1.1 with
    Content-Length needs; the server's answers are still parsed (status, timing headers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, f"{host}:{port}")

    def request_bytes(self, method: str, path: str, body: bytes | None = None) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\n"
        if body is None:
            return (head + "\r\n").encode()
        return (head + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body

    async def send(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def drive(
    server: Server, name: str, clients: int, per_request: int | tuple[int, int], sentences: list[str], seconds: float,
    seed: int = 0, health_only: bool = False,
) -> Result:
    """`clients` tasks, each sending one request at a time to /embed until `seconds` have passed.

    health_only sends GET /health instead: no tokenization and no model, so its requests/s is the
    ceiling that HTTP, JSON and the event loop (server and client on the same cores) put on any route.
    """
    before = server.batch_counts()
    result = Result(name, seconds)
    stop_at = 0.0

    async def one_client(number: int) -> None:
        connection = connections[number]
        rng = random.Random(seed * 1000 + number)
        health = connection.request_bytes("GET", "/health")
        while time.perf_counter() < stop_at:
            count = per_request if isinstance(per_request, int) else rng.randint(*per_request)
            if health_only:
                data = health
            else:
                batch = [rng.choice(sentences) for _ in range(count)]
                data = connection.request_bytes("POST", "/embed", json.dumps({"inputs": batch}).encode())
            started = time.perf_counter()
            try:
                status, headers, _ = await connection.send(data)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                result.errors[type(exc).__name__] += 1
                await connection.close()
                connection = connections[number] = await Connection.open("127.0.0.1", server.port)
                continue
            latency = (time.perf_counter() - started) * 1000
            if status != 200:
                result.errors[str(status)] += 1
                continue
            result.requests += 1
            result.sentences += count
            result.latencies.append(latency)
            if health_only:
                continue
            result.queue_ms.append(float(headers["x-queue-time"]))
            result.inference_ms.append(float(headers["x-inference-time"]))

    # one keep-alive connection per client, opened before the clock starts
    connections = [await Connection.open("127.0.0.1", server.port) for _ in range(clients)]
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(one_client(n) for n in range(clients)))
    for connection in connections:
        await connection.close()
    result.seconds = time.perf_counter() - started
    after = server.batch_counts()
    if after[1] > before[1]:
        result.mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    return result


def in_process(model: str, threads: int, precision: str | None, sentences: list[str], seconds: float, batch_size: int = 64) -> Result:
    library = TextAE.load(model, num_threads=threads, precision=precision)
    rng = random.Random(0)
    result = Result(f"in-process TextAE.embed, batch {batch_size}", seconds)
    library.embed(sentences[:batch_size])
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = [rng.choice(sentences) for _ in range(batch_size)]
        t0 = time.perf_counter()
        library.embed(batch, batch_size=batch_size)
        result.latencies.append((time.perf_counter() - t0) * 1000)
        result.requests += 1
        result.sentences += batch_size
    result.seconds = time.perf_counter() - started
    return result


def varied(sentences: list[str], rng: random.Random) -> list[str]:
    """Sentences of every length up to past max_length: joins of 1-6 corpus lines."""
    return [" ".join(rng.choice(sentences) for _ in range(rng.randint(1, 6))) for _ in range(2000)]


def soak(server: Server, sentences: list[str], seconds: float) -> tuple[Result, dict[str, float]]:
    long_mixed = varied(sentences, random.Random(1))
    asyncio.run(drive(server, "warm-up", 16, (1, 32), long_mixed, min(5.0, seconds / 4), seed=9))
    rss = {"start": server.rss_start, "after warm-up": rss_mb(server.process.pid)}
    result = asyncio.run(drive(server, f"soak {seconds:.0f} s, 16 clients x 1-32 varied", 16, (1, 32), long_mixed, seconds, seed=3))
    rss["end"] = rss_mb(server.process.pid)
    return result, rss


# --- onnxruntime arena probe (each configuration in a fresh process) ---------------------------

ARENA_CONFIGS = {
    "arena on, mem pattern on (onnxruntime default)": {"enable_cpu_mem_arena": True, "enable_mem_pattern": True},
    "arena on, mem pattern off (textae's setting)": {"enable_cpu_mem_arena": True, "enable_mem_pattern": False},
    "arena off (malloc per call)": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
}


def arena_probe(model: str, config_name: str, calls: int, threads: int) -> dict[str, float]:
    import onnxruntime as ort

    library = TextAE.load(model, num_threads=threads, precision="fp32")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for name, value in ARENA_CONFIGS[config_name].items():
        setattr(options, name, value)
    path = library.manifest.graph_path(library.folder, "encoder", "fp32")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    max_length, rng = library.config.max_length, np.random.default_rng(0)

    def call(rows: int, width: int) -> None:
        ids = rng.integers(4, library.config.vocab_size, size=(rows, width), dtype=np.int64)
        session.run(None, {"input_ids": ids, "lengths": np.full(rows, width, dtype=np.int64)})

    call(64, max_length)  # the warm-up the server does: the largest shape first
    pid = os.getpid()
    after_warm_up = rss_mb(pid)
    started = time.perf_counter()
    for _ in range(calls):
        width = min(max_length, 8 * int(rng.integers(1, max_length // 8 + 2)))
        call(int(rng.integers(1, 65)), width)
    return {"after warm-up": after_warm_up, "end": rss_mb(pid), "ms per call": (time.perf_counter() - started) * 1000 / calls}


def run_arena_probes(model: str, calls: int, threads: int) -> dict[str, dict[str, float]]:
    results = {}
    for name in ARENA_CONFIGS:
        output = subprocess.run(
            [sys.executable, __file__, model, "-", "--arena-probe", name, "--arena-calls", str(calls), "--threads", str(threads)],
            capture_output=True, text=True, check=True,
        )
        results[name] = json.loads(output.stdout.strip().splitlines()[-1])
    return results


# --- report ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def print_table(results: list[Result]) -> None:
    header = f"{'scenario':<44} {'req/s':>8} {'sent/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batch':>6} {'queue':>7} {'infer':>7} {'rest':>7}  errors"
    print(header)
    print("-" * len(header))
    for r in results:
        latency = statistics.fmean(r.latencies) if r.latencies else float("nan")
        queue = statistics.fmean(r.queue_ms) if r.queue_ms else float("nan")
        inference = statistics.fmean(r.inference_ms) if r.inference_ms else float("nan")
        rest = latency - queue - inference if r.queue_ms else float("nan")
        batch = f"{r.mean_batch:.1f}" if r.mean_batch is not None else "-"
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "0"
        print(
            f"{r.name:<44} {r.requests / r.seconds:>8.1f} {r.sentences_per_second:>9.1f} {percentile(r.latencies, 50):>8.2f} "
            f"{percentile(r.latencies, 95):>8.2f} {percentile(r.latencies, 99):>8.2f} {batch:>6} {queue:>7.2f} {inference:>7.2f} {rest:>7.2f}  {errors}"
        )
    print("(queue, infer, rest: mean ms per request; rest = HTTP, JSON, tokenization, event loop)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="export folder (e.g. export/python-docs)")
    parser.add_argument("sentences", help="text file, one sentence a line (e.g. ../shared/data/corpora/tatoeba.txt)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--soak", type=float, default=60.0, help="seconds of the varied-length soak")
    parser.add_argument("--threads", type=int, default=None, help="server (and in-process) onnxruntime threads (default: the usable cores)")
    parser.add_argument("--precision", default=None, help="fp32 or int8 (default: the export's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per scenario, 6 s soak, a short arena probe")
    parser.add_argument("--arena-calls", type=int, default=3000, help="encoder calls per arena configuration")
    parser.add_argument("--arena-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = args.threads or available_cores()
    if args.arena_probe:
        print(json.dumps(arena_probe(args.model, args.arena_probe, args.arena_calls, threads)))
        return
    if args.quick:
        args.duration, args.soak, args.arena_calls = 2.0, 6.0, 100
    sentences = [line.strip() for line in Path(args.sentences).read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = random.Random(0).sample(sentences, min(len(sentences), 20_000))
    print(f"model {args.model}, {len(sentences)} sentences from {args.sentences}, {threads} threads, "
          f"precision {args.precision or 'of the export'}, {args.duration:.0f} s per scenario\n")

    results = [in_process(args.model, threads, args.precision, sentences, args.duration)]
    # what batching 16 single-sentence requests can gain at most, before any HTTP: the model's own rate
    # at batch 16 over its rate at batch 1
    results += [in_process(args.model, threads, args.precision, sentences, args.duration / 2, size) for size in (1, 16)]
    server = Server(args.model, threads, args.precision)
    try:
        results.append(asyncio.run(drive(server, "16 clients x GET /health (HTTP ceiling)", 16, 1, sentences, args.duration / 2, health_only=True)))
        for clients in (1, 4, 16, 64):
            results.append(asyncio.run(drive(server, f"{clients} clients x 1 sentence", clients, 1, sentences, args.duration)))
        results.append(asyncio.run(drive(server, "16 clients x 32 sentences", 16, 32, sentences, args.duration)))
        soak_result, rss = soak(server, sentences, args.soak)
        results.append(soak_result)
    finally:
        server.stop()
    unbatched = Server(args.model, threads, args.precision, "--max-batch-size", "1")
    try:
        results.append(asyncio.run(drive(unbatched, "16 clients x 1 sentence, --max-batch-size 1", 16, 1, sentences, args.duration)))
    finally:
        unbatched.stop()

    print_table(results)
    by_name = {r.name: r for r in results}
    reference = results[0].sentences_per_second
    big = by_name["16 clients x 32 sentences"]
    single, unbatched_result = by_name["16 clients x 1 sentence"], by_name["16 clients x 1 sentence, --max-batch-size 1"]
    growth = (rss["end"] - rss["after warm-up"]) / rss["after warm-up"] * 100
    print()
    print(f"16x32 vs in-process batch 64: {big.sentences_per_second / reference * 100:.0f} % of sentences/s (target >= 60 %), errors {sum(big.errors.values())}")
    print(f"16x1 batched vs --max-batch-size 1: {single.sentences_per_second / unbatched_result.sentences_per_second:.2f}x (target >= 3x), errors {sum(single.errors.values())}")
    # 16 one-sentence clients can at best reach the slower of: the model's own rate at batch 16, and
    # the rate at which HTTP alone answers (server and client share these cores)
    model_16 = by_name["in-process TextAE.embed, batch 16"].sentences_per_second
    model_1 = by_name["in-process TextAE.embed, batch 1"].sentences_per_second
    ceiling = by_name["16 clients x GET /health (HTTP ceiling)"]
    http = ceiling.requests / ceiling.seconds
    print(f"  bound: min(in-process batch 16 {model_16:.0f} sent/s, HTTP ceiling {http:.0f} req/s) = "
          f"{min(model_16, http) / unbatched_result.sentences_per_second:.2f}x the --max-batch-size 1 server "
          f"(the model alone gains {model_16 / model_1:.2f}x from batch 1 to 16)")
    print(f"server RSS MB: start {rss['start']:.0f}, after warm-up {rss['after warm-up']:.0f}, end {rss['end']:.0f}: {growth:+.1f} % after warm-up (target <= 10 %)")

    print(f"\nonnxruntime arena settings, encoder fp32, {args.arena_calls} calls of random shapes (rows 1-64, widths bucketed by 8):")
    for name, probe in run_arena_probes(args.model, args.arena_calls, threads).items():
        change = (probe["end"] - probe["after warm-up"]) / probe["after warm-up"] * 100
        print(f"  {name:<48} RSS {probe['after warm-up']:.0f} -> {probe['end']:.0f} MB ({change:+.1f} %), {probe['ms per call']:.2f} ms/call")


if __name__ == "__main__":
    main()
