"""`textae serve` in-process: every route and every error, through httpx's ASGI transport with the
app's lifespan run (model load, warm-up, drain), against the library's own answers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx
from helpers.tiny import TINY_SENTENCES

from textae.runtime import TextAE
from textae.serve.app import create_app
from textae.serve.settings import ServeSettings

SECRET = "zq-secret-marker-zq"  # put in bad inputs: must never come back in an error body
LONG = " ".join(TINY_SENTENCES)  # far more than max_length (32) tokens


@pytest.fixture(scope="module")
def export(random_export: Path) -> Path:
    return random_export


@pytest.fixture(scope="module")
def library(export: Path) -> TextAE:
    # fp32, the exact reference; int8 vectors are batch-invariant too (per-row int8 encoder) but differ slightly from fp32
    return TextAE.load(export, num_threads=1, precision="fp32")


def settings(export: Path, **overrides: Any) -> ServeSettings:
    return ServeSettings(model=str(export), precision="fp32", threads=1, **overrides)


@contextlib.asynccontextmanager
async def served(export: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(export, **overrides))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://textae") as client,
    ):
        client.app = app  # type: ignore[attr-defined]
        yield client


def run(scenario: Any) -> Any:
    return asyncio.run(scenario)


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == status and body["message"]
    if param is not None:
        assert body["param"] == param, body
    assert SECRET not in response.text
    return body


# --- answers equal the library's ---------------------------------------------------------------


def test_embed_equals_library_per_sentence(export: Path, library: TextAE) -> None:
    sentences = TINY_SENTENCES[:10] + ["", "   ", LONG]

    async def scenario() -> None:
        async with served(export) as client:
            response = await client.post("/embed", json={"inputs": sentences})
            assert response.status_code == 200
            body = response.json()
            assert body["truncated"] == [False] * 12 + [True]
            got = np.array(body["embeddings"], dtype=np.float32)
            expected = np.stack([library.embed([s])[0] for s in sentences])
            np.testing.assert_allclose(got, expected, atol=1e-5)
            normalized = (await client.post("/embed", json={"inputs": sentences[:3], "normalize": True})).json()
            np.testing.assert_allclose(normalized["embeddings"], library.embed(sentences[:3], normalize=True), atol=1e-6)
            single = (await client.post("/embed", json={"inputs": sentences[0]})).json()
            np.testing.assert_allclose(single["embeddings"], expected[:1], atol=1e-5)

    run(scenario())


def test_embed_whitens_by_default_and_raw_returns_the_encoders_vectors(export: Path, library: TextAE) -> None:
    sentences = TINY_SENTENCES[:5]

    async def scenario() -> None:
        async with served(export) as client:
            default = (await client.post("/embed", json={"inputs": sentences})).json()["embeddings"]
            raw = (await client.post("/embed", json={"inputs": sentences, "raw": True})).json()["embeddings"]
            np.testing.assert_allclose(default, library.embed(sentences), atol=1e-5, rtol=0)
            np.testing.assert_allclose(raw, library.embed(sentences, raw=True), atol=1e-5, rtol=0)
            assert library.postprocessing() is not None and not np.allclose(np.array(default), np.array(raw)[:, : library.dim], atol=1e-3)
            decoded = (await client.post("/decode", json={"vectors": raw, "raw": True})).json()["texts"]
            assert decoded == library.decode(np.array(raw, dtype=np.float32), raw=True)
            # by default /decode takes what /embed returns by default, and undoes the whitening
            undone = (await client.post("/decode", json={"vectors": default})).json()["texts"]
            assert undone == decoded
            info = (await client.get("/info")).json()
            assert (info["dim"], info["raw_dim"]) == (library.dim, library.raw_dim)
            wrong = await client.post("/embed", json={"inputs": sentences, "raw": "maybe"})
            assert wrong.status_code == 422

    run(scenario())


def test_embed_returns_the_features_when_asked(export: Path, library: TextAE) -> None:
    sentences = TINY_SENTENCES[:5]

    async def scenario() -> None:
        async with served(export) as client:
            info = (await client.get("/info")).json()
            assert (info["feature_dim"], info["feature_source"]) == (library.feature_dim, library.config.feature_source)
            for raw in (False, True):
                body = (await client.post("/embed", json={"inputs": sentences, "output": "features", "raw": raw})).json()
                got = np.array(body["embeddings"], dtype=np.float32)
                assert got.shape == (5, library.raw_feature_dim if raw else library.feature_dim)
                np.testing.assert_allclose(got, library.embed(sentences, output="features", raw=raw), atol=1e-5, rtol=0)
            wrong = await client.post("/embed", json={"inputs": sentences, "output": "words"})
            assert wrong.status_code == 422 and "output" in wrong.text and "words" not in wrong.text

    run(scenario())


def test_score_reconstruct_and_decode_equal_library(export: Path, library: TextAE) -> None:
    sentences = TINY_SENTENCES[:6] + [LONG]

    async def scenario() -> None:
        async with served(export) as client:
            scores = (await client.post("/score", json={"inputs": sentences})).json()
            expected = np.array([library.score([s])[0] for s in sentences])
            np.testing.assert_allclose(scores["scores"], expected, atol=1e-5)
            assert scores["truncated"][-1] is True and scores["flagged"] is None
            threshold = float(np.median(expected))
            flagged = (await client.post("/score", json={"inputs": sentences, "threshold": threshold})).json()["flagged"]
            assert flagged == [bool(s >= threshold) for s in flagged_scores(flagged, scores["scores"])]

            texts = (await client.post("/reconstruct", json={"inputs": sentences[:4], "max_length": 12})).json()
            assert texts["texts"] == [library.reconstruct([s], max_length=12)[0] for s in sentences[:4]]
            assert texts["truncated"] == [False] * 4

            vectors = library.embed(sentences[:3], raw=True)
            decoded = (await client.post("/decode", json={"vectors": vectors.tolist(), "raw": True})).json()
            assert decoded["texts"] == library.decode(vectors, raw=True)

            beamed = (await client.post("/reconstruct", json={"inputs": sentences[:4], "beam_size": 3})).json()
            assert beamed["texts"] == library.reconstruct(sentences[:4], beam_size=3)
            decoded = (await client.post("/decode", json={"vectors": vectors.tolist(), "raw": True, "beam_size": 2})).json()
            assert decoded["texts"] == library.decode(vectors, raw=True, beam_size=2)
            refused = await client.post("/reconstruct", json={"inputs": sentences[:1], "beam_size": 9})
            assert refused.status_code == 422 and refused.json()["error"]["param"] == "beam_size"

    run(scenario())


def flagged_scores(flagged: list[bool], scores: list[float]) -> list[float]:
    assert len(flagged) == len(scores)
    return scores


def test_openai_embeddings_float_and_base64(export: Path, library: TextAE) -> None:
    sentences = TINY_SENTENCES[:3]

    async def scenario() -> None:
        async with served(export) as client:
            floats = (await client.post("/v1/embeddings", json={"input": sentences, "model": "anything", "user": "u1"})).json()
            assert floats["object"] == "list" and floats["model"] == export.name
            assert [d["index"] for d in floats["data"]] == [0, 1, 2]
            np.testing.assert_allclose([d["embedding"] for d in floats["data"]], library.embed(sentences), atol=1e-5)
            tokens = sum(len(ids) for ids in library.tokenize(sentences))
            assert floats["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

            encoded = (await client.post("/v1/embeddings", json={"input": sentences[0], "encoding_format": "base64"})).json()
            vector = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
            np.testing.assert_allclose(vector, library.embed(sentences[:1])[0], atol=1e-6)

            wrong = await client.post("/v1/embeddings", json={"input": "x", "dimensions": library.dim + 1})
            assert_error(wrong, 422, "dimensions")

    run(scenario())


def test_official_openai_client_works_unchanged(export: Path, library: TextAE) -> None:
    openai = pytest.importorskip("openai")
    app = create_app(settings(export))

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            http_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
            client = openai.AsyncOpenAI(base_url="http://textae/v1", api_key="unused", http_client=http_client, max_retries=0)
            # the client asks for base64 by default and decodes it itself
            result = await client.embeddings.create(model="textae", input=TINY_SENTENCES[:2])
            np.testing.assert_allclose([d.embedding for d in result.data], library.embed(TINY_SENTENCES[:2]), atol=1e-6)
            assert result.usage.prompt_tokens > 0
            as_floats = await client.embeddings.create(model="textae", input="the cat sat on the mat.", encoding_format="float")
            np.testing.assert_allclose(as_floats.data[0].embedding, library.embed(["the cat sat on the mat."])[0], atol=1e-5)
            with pytest.raises(openai.UnprocessableEntityError, match="at most"):
                await client.embeddings.create(model="textae", input=["x" * 20_000])
            await http_client.aclose()

    run(scenario())


def test_sixty_four_concurrent_mixed_requests_never_cross(export: Path, library: TextAE) -> None:
    rng = random.Random(0)
    pool = TINY_SENTENCES + [LONG, "", "a"]

    def request(number: int) -> tuple[str, dict[str, Any], list[str]]:
        picked = rng.sample(pool, rng.randint(1, 5))
        kind = number % 4
        if kind == 0:
            return "/embed", {"inputs": picked}, picked
        if kind == 1:
            return "/v1/embeddings", {"input": picked, "encoding_format": "base64"}, picked
        if kind == 2:
            return "/score", {"inputs": picked}, picked
        return "/embed", {"inputs": picked[0]}, picked[:1]

    requests = [request(n) for n in range(64)]
    vectors = {s: library.embed([s])[0] for s in pool}
    scores = {s: library.score([s])[0] for s in pool}

    async def scenario() -> None:
        async with served(export, max_wait_ms=5) as client:
            responses = await asyncio.gather(*(client.post(path, json=body) for path, body, _ in requests))
            batch_sizes = await client.get("/metrics")
        for (path, _, picked), response in zip(requests, responses):
            assert response.status_code == 200, response.text
            body = response.json()
            if path == "/score":
                np.testing.assert_allclose(body["scores"], [scores[s] for s in picked], atol=1e-5)
                continue
            if path == "/embed":
                got = np.array(body["embeddings"], dtype=np.float32)
            else:
                got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
            np.testing.assert_allclose(got, np.stack([vectors[s] for s in picked]), atol=1e-5)
        # they really were batched together (not one request per onnxruntime call)
        count = metric(batch_sizes.text, "textae_batch_size_count")
        assert 0 < count < sum(len(picked) for _, _, picked in requests)

    run(scenario())


def metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in metrics")


# --- operational routes --------------------------------------------------------------------------


def test_health_ready_info_metrics_and_timing_headers(export: Path, library: TextAE) -> None:
    async def scenario() -> None:
        async with served(export, max_inputs=8) as client:
            assert (await client.get("/health")).json() == {"status": "alive"}
            assert (await client.get("/ready")).json() == {"status": "ready"}
            info = (await client.get("/info")).json()
            assert info["precision"] == "fp32" and info["dim"] == library.dim and info["max_length"] == library.config.max_length
            assert info["limits"]["max_inputs"] == 8 and info["threads"] == 1
            embedded = await client.post("/embed", json={"inputs": ["the cat sat on the mat."]})
            assert float(embedded.headers["x-inference-time"]) > 0 and float(embedded.headers["x-queue-time"]) >= 0
            for response in (await client.get("/health"), await client.get("/nowhere"), await client.post("/embed", json={})):
                assert {"x-queue-time", "x-inference-time"} <= set(response.headers)
            assert_error(await client.get("/nowhere"), 404)
            text = (await client.get("/metrics")).text
            assert metric(text, "textae_requests_total", '{route="/embed",status="200"}') == 1
            assert metric(text, "textae_requests_total", '{route="/embed",status="422"}') == 1
            assert metric(text, "textae_requests_total", '{route="other",status="404"}') == 2
            assert metric(text, "textae_queue_depth") == 0
            for name in ("textae_batch_size_bucket", "textae_batch_tokens_bucket", "textae_queue_seconds_bucket", "textae_inference_seconds_bucket"):
                assert name in text

    run(scenario())


def test_ready_is_503_before_warm_up_and_while_draining(export: Path) -> None:
    async def scenario() -> None:
        app = create_app(settings(export))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://textae") as client:
            assert_error(await client.get("/ready"), 503)  # lifespan not run: nothing loaded
            assert_error(await client.post("/embed", json={"inputs": ["a"]}), 503)
        async with served(export) as client:
            assert (await client.get("/ready")).status_code == 200
            client.app.state.service.draining = True  # type: ignore[attr-defined]  # what SIGTERM sets
            assert_error(await client.get("/ready"), 503)
            assert (await client.get("/health")).status_code == 200
            assert (await client.post("/embed", json={"inputs": ["still served"]})).status_code == 200

    run(scenario())


# --- refusals --------------------------------------------------------------------------------------


def test_body_over_the_cap_is_413_by_header_and_by_streamed_bytes(export: Path) -> None:
    async def scenario() -> None:
        async with served(export, max_body_bytes=1000) as client:
            big = json.dumps({"inputs": [SECRET * 100]}).encode()
            assert_error(await client.post("/embed", content=big, headers={"content-type": "application/json"}), 413)

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
                for _ in range(20):
                    yield b'{"inputs": ["' + SECRET.encode() * 10

            streamed = await client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
            assert "content-length" not in streamed.request.headers
            assert_error(streamed, 413)
            fine = await client.post("/embed", json={"inputs": ["small enough"]})
            assert fine.status_code == 200

    run(scenario())


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/embed", b'{"inputs": ["' + SECRET.encode() + b'"', "body"),  # malformed JSON
        ("/embed", b"\xff\xfe" + SECRET.encode(), "body"),  # not UTF-8
        ("/embed", b'{"inputs": 5}', "inputs"),
        ("/embed", b'{"inputs": ["ok", 5]}', "inputs[1]"),
        ("/embed", b'{"inputs": []}', "inputs"),
        ("/embed", b'{"inputs": ["a"], "normalize": "' + SECRET.encode() + b'"}', "normalize"),
        ("/embed", b'{"inputs": ["a"], "' + SECRET.encode() + b'": 1}', "body"),  # unknown field
        ("/embed", b'{"inputs": ["a", "b", "c", "d", "e"]}', "inputs"),  # over max_inputs
        ("/embed", b'{"inputs": ["a", "' + SECRET.encode() * 5 + b'"]}', "inputs[1]"),  # over max_chars
        ("/embed", b'{"inputs": ["ok", "\\ud800' + SECRET.encode() + b'"]}', "inputs[1]"),  # lone surrogate
        ("/v1/embeddings", b'{"input": "\\udfff"}', "input"),
        ("/v1/embeddings", b'{"input": "a", "encoding_format": "' + SECRET.encode() + b'"}', "encoding_format"),
        ("/v1/embeddings", b'{"input": [1, 2]}', "input[0]"),
        ("/v1/embeddings", b'{"model": "m"}', "input"),
        ("/score", b'{"inputs": ["a"], "threshold": NaN}', "threshold"),
        ("/score", b'{"inputs": ["a"], "threshold": Infinity}', "threshold"),
        ("/reconstruct", b'{"inputs": ["a"], "max_length": 0}', "max_length"),
        ("/decode", b'{"vectors": [[0.5]]}', "vectors[0]"),  # wrong width
        ("/decode", b'{"vectors": []}', "vectors"),
        ("WIDTH-NAN", b"", "vectors[1][3]"),
        ("WIDTH-OVERFLOW", b"", "vectors[0]"),
        ("/embed", b"[1, 2, 3]", "body"),
    ],
)
def test_bad_requests_are_422_naming_the_field(export: Path, library: TextAE, path: str, body: bytes, param: str | None) -> None:
    if path == "WIDTH-NAN":
        rows = [[0.0] * library.raw_dim, [0.0] * library.raw_dim]
        path, body = "/decode", json.dumps({"vectors": rows}).replace("0.0", "NaN", library.raw_dim + 4).replace("NaN", "0.0", library.raw_dim + 3).encode()
    elif path == "WIDTH-OVERFLOW":  # finite as float64, infinite as float32
        path, body = "/decode", json.dumps({"vectors": [[1e39] + [0.0] * (library.raw_dim - 1)]}).encode()

    async def scenario() -> None:
        async with served(export, max_inputs=4, max_chars=50) as client:
            response = await client.post(path, content=body, headers={"content-type": "application/json"})
            error = assert_error(response, 422, param)
            assert error["type"] == "invalid_request_error"

    run(scenario())


def test_over_long_input_is_truncated_and_reported_or_refused(export: Path, library: TextAE) -> None:
    async def scenario() -> None:
        async with served(export) as client:
            kept = (await client.post("/embed", json={"inputs": ["short.", LONG]})).json()
            assert kept["truncated"] == [False, True]
            np.testing.assert_allclose(kept["embeddings"][1], library.embed([LONG])[0], atol=1e-5)
            for path in ("/embed", "/score", "/reconstruct"):
                refused = await client.post(path, json={"inputs": ["short.", LONG], "truncate": False})
                body = assert_error(refused, 422, "inputs[1]")
                assert str(library.config.max_length) in body["message"] and LONG[:20] not in refused.text
            single = await client.post("/embed", json={"inputs": LONG, "truncate": False})
            assert_error(single, 422, "inputs")
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "textae_inputs_truncated_total") == 1

    run(scenario())


def test_api_key_is_required_on_model_routes(export: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-token\n")

    async def scenario() -> None:
        async with served(export, api_key_file=str(key_file)) as client:
            body = {"inputs": ["a"]}
            missing = await client.post("/embed", json=body)
            assert_error(missing, 401)
            assert missing.headers["www-authenticate"] == "Bearer"
            assert_error(await client.post("/embed", json=body, headers={"authorization": "Bearer wrong"}), 401)
            assert_error(await client.post("/embed", json=body, headers={"authorization": "Basic s3cret-token"}), 401)
            assert_error(await client.get("/info"), 401)
            good = {"authorization": "Bearer s3cret-token"}
            assert (await client.post("/embed", json=body, headers=good)).status_code == 200
            assert (await client.post("/v1/embeddings", json={"input": "a"}, headers=good)).status_code == 200
            for open_route in ("/health", "/ready", "/metrics", "/openapi.json"):
                assert (await client.get(open_route)).status_code == 200
            spec = (await client.get("/openapi.json")).json()
            assert "401" in spec["paths"]["/embed"]["post"]["responses"]

    run(scenario())


def stall_inference(service: Any) -> tuple[threading.Event, threading.Event, list[list[list[int]]]]:
    """Make the inference thread wait on `release` inside its next batch; records every batch run."""
    release, started, seen = threading.Event(), threading.Event(), []
    original = service.model.embed_ids

    def slow(token_ids: Any, width: int | None = None, **options: Any) -> np.ndarray:
        seen.append([list(ids) for ids in token_ids])
        started.set()
        release.wait(10)
        return original(token_ids, width, **options)

    service.model.embed_ids = slow
    return release, started, seen


def test_full_queue_is_429_with_retry_after(export: Path) -> None:
    async def scenario() -> None:
        async with served(export, max_queue=4, max_inputs=4) as client:
            release, started, _ = stall_inference(client.app.state.service)  # type: ignore[attr-defined]
            running = asyncio.create_task(client.post("/embed", json={"inputs": ["one"]}))
            await asyncio.to_thread(started.wait, 5)
            waiting = asyncio.create_task(client.post("/embed", json={"inputs": ["a", "b", "c", "d"]}))
            while client.app.state.service.batcher.depth < 4:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
            refused = await client.post("/embed", json={"inputs": ["e"]})
            body = assert_error(refused, 429)
            assert body["type"] == "overloaded" and int(refused.headers["retry-after"]) >= 1
            release.set()
            assert (await running).status_code == 200 and (await waiting).status_code == 200
            assert (await client.post("/embed", json={"inputs": ["e"]})).status_code == 200

    run(scenario())


def test_disconnected_client_is_dropped_before_its_request_runs(export: Path) -> None:
    async def scenario() -> None:
        async with served(export) as client:
            app = client.app  # type: ignore[attr-defined]
            release, started, seen = stall_inference(app.state.service)
            running = asyncio.create_task(client.post("/embed", json={"inputs": ["first"]}))
            await asyncio.to_thread(started.wait, 5)
            gone, sent = asyncio.Event(), []
            body = json.dumps({"inputs": ["the disconnected request's sentence."]}).encode()
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                "path": "/embed", "raw_path": b"/embed", "query_string": b"", "root_path": "",
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                "client": ("127.0.0.1", 1), "server": ("textae", 80), "state": {},
            }
            request = asyncio.create_task(app(scope, receive, send))
            while app.state.service.batcher.depth < 1:
                await asyncio.sleep(0.01)
            gone.set()  # the client hangs up while its sentence waits behind the stalled batch
            await request
            assert app.state.service.batcher.depth == 0
            release.set()
            assert (await running).status_code == 200
            after = await client.post("/embed", json={"inputs": ["later"]})
            assert after.status_code == 200
            tokens = app.state.service.model.tokenize(["the disconnected request's sentence."])[0]
            assert all(tokens not in batch for batch in seen)
            assert sent[0]["status"] == 499

    run(scenario())


class FailingSession:
    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : injected failure")


def test_onnxruntime_failure_is_500_and_the_server_keeps_serving(export: Path, library: TextAE) -> None:
    async def scenario() -> None:
        async with served(export) as client:
            service = client.app.state.service  # type: ignore[attr-defined]
            sessions, key = service.model._sessions, ("encoder", service.model.precisions["embed"])
            working = sessions[key]
            sessions[key] = FailingSession()
            failed = await client.post("/embed", json={"inputs": ["the cat sat on the mat.", SECRET]})
            body = assert_error(failed, 500)
            assert body["type"] == "server_error" and "injected" not in body["message"]
            sessions[key] = working
            again = await client.post("/embed", json={"inputs": ["the cat sat on the mat."]})
            assert again.status_code == 200
            np.testing.assert_allclose(again.json()["embeddings"][0], library.embed(["the cat sat on the mat."])[0], atol=1e-5)
            assert (await client.get("/health")).status_code == 200
            assert metric((await client.get("/metrics")).text, "textae_batch_failures_total") == 1

    run(scenario())


def test_openapi_documents_every_route_field_and_error(export: Path) -> None:
    async def scenario() -> None:
        async with served(export, max_inputs=7, max_chars=99) as client:
            spec = (await client.get("/openapi.json")).json()
        paths = spec["paths"]
        for route in ("/v1/embeddings", "/embed", "/reconstruct", "/score", "/decode"):
            responses = paths[route]["post"]["responses"]
            assert {"200", "413", "422", "429", "500", "503"} <= set(responses), route
            assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
        for route in ("/health", "/ready", "/info", "/metrics"):
            assert "get" in paths[route]
        schemas = spec["components"]["schemas"]
        embed = schemas["EmbedRequest"]["properties"]["inputs"]
        assert "7" in embed["description"] and "99" in embed["description"]
        assert {"inputs", "normalize", "truncate"} <= set(schemas["EmbedRequest"]["properties"])
        assert {"embeddings", "truncated"} <= set(schemas["EmbedResponse"]["properties"])
        assert set(schemas["OpenAIEmbeddingsRequest"]["properties"]) >= {"input", "model", "encoding_format"}

    run(scenario())


# --- the command ---------------------------------------------------------------------------------


def test_serve_command_refuses_a_bad_folder_in_one_line(cli: Any, export: Path, tmp_path: Path) -> None:
    code, _out, err = cli("serve", tmp_path / "missing")
    assert code == 2 and err.startswith("textae: error: ") and err.count("\n") == 1 and "Traceback" not in err
    from helpers.exports import copy_export

    broken = copy_export(export, tmp_path / "broken")
    (broken / "encoder.onnx").write_bytes(b"not a graph")
    code, _, err = cli("serve", broken)
    assert code == 2 and "encoder.onnx" in err and err.count("\n") == 1
    code, _, err = cli("serve", export, "--max-batch-size", "0")
    assert code == 2 and "--max-batch-size" in err
    code, _, err = cli("serve", export, "--api-key-file", tmp_path / "no-such-key")
    assert code == 2 and "API key" in err
