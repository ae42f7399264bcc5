"""`textae serve` as a real uvicorn process on 127.0.0.1: the official openai client, several workers
with one metrics view, and SIGTERM under load (ready turns 503, requests in flight finish, exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx
from helpers.server import Server
from helpers.tiny import TINY_SENTENCES

from textae.runtime import TextAE

pytestmark = pytest.mark.slow


@pytest.fixture
def server_factory(random_export: Path) -> Iterator:
    servers: list[Server] = []

    def start(*options: str) -> Server:
        server = Server(random_export, *options)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


def test_official_openai_client_against_the_real_server(server_factory, random_export: Path) -> None:
    openai = pytest.importorskip("openai")
    library = TextAE.load(random_export, num_threads=1, precision="fp32")
    server = server_factory("--threads", "1")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(model="textae", input=TINY_SENTENCES[:4])  # base64 on the wire
    np.testing.assert_allclose([d.embedding for d in result.data], library.embed(TINY_SENTENCES[:4]), atol=1e-6)
    raw = httpx.post(server.url + "/embed", json={"inputs": ["the cat sat on the mat."]})
    assert raw.status_code == 200 and float(raw.headers["x-inference-time"]) > 0
    assert "textae_batch_size_bucket" in httpx.get(server.url + "/metrics").text


def test_workers_share_threads_and_one_metrics_view(server_factory) -> None:
    server = server_factory("--workers", "2", "--threads", "2")
    info = httpx.get(server.url + "/info").json()
    assert info["workers"] == 2 and info["threads"] == 1
    for _ in range(12):  # new connections: the kernel spreads them over both workers
        assert httpx.post(server.url + "/embed", json={"inputs": ["a dog ran in the park."]}, headers={"connection": "close"}).status_code == 200
    text = httpx.get(server.url + "/metrics").text
    served = [line for line in text.splitlines() if line.startswith('textae_requests_total{route="/embed",status="200"}')]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in served) == 12
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0


def test_sigterm_under_load_turns_ready_off_finishes_requests_and_exits_0(server_factory) -> None:
    server = server_factory("--threads", "1", "--drain-seconds", "1.5", "--max-wait-ms", "1")
    sentences = TINY_SENTENCES * 5  # 250 sentences a request: each takes a while on one thread
    results: list[tuple[float, float, object]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = httpx.post(server.url + "/embed", json={"inputs": sentences}, headers={"connection": "close"}, timeout=30)
                outcome: object = response.status_code
            except httpx.TransportError as exc:  # refused once the server has closed its socket
                outcome = type(exc).__name__
                stop.wait(0.05)
            with lock:
                results.append((started, time.monotonic(), outcome))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    while sum(1 for *_, outcome in results if outcome == 200) < 6:
        time.sleep(0.05)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    ready_codes = []
    while time.monotonic() < signalled + 1.0:
        try:
            ready_codes.append(httpx.get(server.url + "/ready", timeout=2).status_code)
        except httpx.TransportError:
            break
        time.sleep(0.1)
    code = server.process.wait(60)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert code == 0, server.process.stdout.read()
    assert ready_codes and set(ready_codes) == {503}
    answered = [(start, end, outcome) for start, end, outcome in results if isinstance(outcome, int)]
    assert {outcome for *_, outcome in answered} == {200}  # never a 5xx or a 503 for a model request
    # requests sent before the signal that were still running at it were answered
    assert any(start < signalled < end for start, end, _ in answered)
    assert any(end > signalled + 1.5 for _, end, _ in answered)  # served through the drain window
    failures = {outcome for *_, outcome in results if not isinstance(outcome, int)}
    assert failures <= {"ConnectError", "RemoteProtocolError", "ReadError"}, failures


def test_serve_package_imports_no_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
        "import textae.serve.app, textae.serve.server, textae.cli\n"
        "bad = [m for m in sys.modules if m.startswith(('textae.training', 'textae.export'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
