"""The batcher alone, with a fake model: caps, length bucketing, fairness, cancellation, failures."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

pytest.importorskip("fastapi")

from textae.serve.batcher import Batch, Batcher, InferenceFailed, QueueClosed, QueueFull


class Recorder:
    """A fake run_batch: records every batch, returns each payload back; can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.fail = False

    def __call__(self, batch: Batch) -> list[Any]:
        self.started.set()
        self.release.wait(10)
        self.batches.append(batch)
        if self.fail:
            raise RuntimeError("onnxruntime exploded")
        return list(batch.payloads)


def make(recorder: Recorder, **overrides: Any) -> Batcher:
    options = {"max_batch_size": 4, "max_batch_tokens": 64, "max_wait_ms": 20, "max_queue": 32,
               "max_length": 32, "bucket_multiple": 8}  # fmt: skip
    batcher = Batcher(recorder, **{**options, **overrides})
    batcher.start()
    return batcher


def ids(length: int, tag: int) -> list[int]:
    return [tag] * length


def test_results_return_to_their_requests_in_order() -> None:
    recorder = Recorder()
    batcher = make(recorder)

    async def scenario() -> None:
        tickets = [batcher.submit(("embed",), [ids(n, 100 * r + n) for n in (3, 9, 1)], [3, 9, 1]) for r in range(5)]
        for r, ticket in enumerate(tickets):
            assert await ticket.future == [ids(n, 100 * r + n) for n in (3, 9, 1)]

    asyncio.run(scenario())
    batcher.close()
    for batch in recorder.batches:
        assert len(batch.payloads) <= 4
        assert len(batch.payloads) * batch.width <= 64
        assert batch.width % 8 == 0 and batch.width >= max(map(len, batch.payloads))


def test_widths_are_buckets_capped_at_max_length() -> None:
    batcher = Batcher(Recorder(), max_batch_size=4, max_batch_tokens=64, max_wait_ms=0, max_queue=8, max_length=20, bucket_multiple=8)
    assert [batcher.width_for(n) for n in (0, 1, 8, 9, 16, 17, 20)] == [8, 8, 8, 16, 16, 20, 20]


def test_batches_group_similar_lengths_and_never_mix_kinds() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = make(recorder, max_batch_size=3, max_batch_tokens=1000)

    async def scenario() -> None:
        first = batcher.submit(("embed",), [ids(1, 0)], [1])
        await asyncio.to_thread(recorder.started.wait, 5)  # the thread now holds `first`: the rest queue up
        lengths = [30, 2, 29, 3, 28, 1]
        embeds = batcher.submit(("embed",), [ids(n, n) for n in lengths], lengths)
        scores = batcher.submit(("score",), [ids(5, 5)], [5])
        recorder.release.set()
        await asyncio.gather(first.future, embeds.future, scores.future)

    asyncio.run(scenario())
    batcher.close()
    rows = [sorted(map(len, batch.payloads)) for batch in recorder.batches[1:]]
    kinds = [batch.key for batch in recorder.batches[1:]]
    # the oldest waiting item (30 tokens) goes first, with its nearest neighbours in length
    assert rows[0] == [28, 29, 30] and kinds[0] == ("embed",)
    assert [1, 2, 3] in rows and ("score",) in kinds
    assert all(len(set(map(len, b.payloads))) == 1 for b in recorder.batches if b.key == ("score",))


def test_token_cap_limits_rows() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = make(recorder, max_batch_size=64, max_batch_tokens=64)

    async def scenario() -> None:
        first = batcher.submit(("embed",), [ids(1, 0)], [1])
        await asyncio.to_thread(recorder.started.wait, 5)
        many = batcher.submit(("embed",), [ids(32, 1)] * 5, [32] * 5)
        recorder.release.set()
        await asyncio.gather(first.future, many.future)

    asyncio.run(scenario())
    batcher.close()
    assert [len(b.payloads) for b in recorder.batches[1:]] == [2, 2, 1]  # 2 rows x 32 = 64 padded tokens


def test_full_queue_refuses_whole_requests_and_closed_queue_refuses_all() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = make(recorder, max_queue=4)

    async def scenario() -> None:
        running = batcher.submit(("embed",), [ids(1, 0)], [1])
        await asyncio.to_thread(recorder.started.wait, 5)
        waiting = batcher.submit(("embed",), [ids(1, 1)] * 3, [1] * 3)
        with pytest.raises(QueueFull):
            batcher.submit(("embed",), [ids(1, 2)] * 2, [1] * 2)
        assert batcher.depth == 3  # nothing of the refused request was queued
        recorder.release.set()
        await asyncio.gather(running.future, waiting.future)

    asyncio.run(scenario())
    batcher.close()

    async def after_close() -> None:
        with pytest.raises(QueueClosed):
            batcher.submit(("embed",), [ids(1, 3)], [1])

    asyncio.run(after_close())


def test_cancelled_requests_are_dropped_before_they_run() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = make(recorder)

    async def scenario() -> None:
        running = batcher.submit(("embed",), [ids(1, 0)], [1])
        await asyncio.to_thread(recorder.started.wait, 5)
        gone = batcher.submit(("embed",), [ids(2, 7)] * 3, [2] * 3)
        kept = batcher.submit(("embed",), [ids(2, 8)], [2])
        batcher.cancel(gone)  # what the handler does when its client disconnects
        assert batcher.depth == 1
        recorder.release.set()
        await asyncio.gather(running.future, kept.future)

    asyncio.run(scenario())
    batcher.close()
    run = [payload for batch in recorder.batches for payload in batch.payloads]
    assert ids(2, 7) not in run and ids(2, 8) in run


def test_a_failing_batch_fails_its_requests_and_the_thread_keeps_serving() -> None:
    recorder = Recorder()
    batcher = make(recorder)

    async def scenario() -> None:
        recorder.fail = True
        with pytest.raises(InferenceFailed, match="RuntimeError"):
            await batcher.submit(("embed",), [ids(3, 1)], [3]).future
        recorder.fail = False
        assert await batcher.submit(("embed",), [ids(3, 2)], [3]).future == [ids(3, 2)]

    asyncio.run(scenario())
    assert batcher.alive
    batcher.close()


def test_close_finishes_queued_work() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = make(recorder, max_wait_ms=10_000)

    async def scenario() -> None:
        tickets = [batcher.submit(("embed",), [ids(n, n)], [n]) for n in range(1, 6)]
        closing = asyncio.create_task(asyncio.to_thread(batcher.close, 10))
        recorder.release.set()
        await closing
        assert [await t.future for t in tickets] == [[ids(n, n)] for n in range(1, 6)]

    asyncio.run(scenario())
    assert not batcher.alive


def test_a_lone_request_never_waits_but_an_expected_one_is_waited_for() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_wait_ms=2_000)

    async def scenario() -> None:
        # nothing else on its way: it runs at once, long before the 2 s max_wait could pass
        await asyncio.wait_for(batcher.submit(("embed",), [ids(2, 1)], [2]).future, timeout=1.0)
        batcher.expect()
        batcher.expect()
        first = batcher.submit(("embed",), [ids(2, 2)], [2], expected=True)
        await asyncio.sleep(0.2)  # one more request is still being tokenized: the batch waits for it
        assert not first.future.done()
        second = batcher.submit(("embed",), [ids(2, 3)], [2], expected=True)
        await asyncio.gather(first.future, second.future)

    asyncio.run(scenario())
    batcher.close()
    assert [len(batch.payloads) for batch in recorder.batches] == [1, 2]


def test_a_request_split_over_batches_counts_each_moment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # x-queue-time + x-inference-time must not exceed the request's time: while its first batch ran,
    # its other sentences were not also "queued" (that double count made the benchmark's rest < 0).
    # A fake clock that only the batches advance makes the accounting exact arithmetic, not timing.
    import types

    import textae.serve.batcher

    clock = [0.0]
    monkeypatch.setattr(textae.serve.batcher, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    class OneSecondBatches(Recorder):
        def __call__(self, batch: Batch) -> list[Any]:
            clock[0] += 1.0
            return super().__call__(batch)

    batcher = make(OneSecondBatches(), max_batch_size=2, max_wait_ms=0)

    async def scenario() -> Any:
        ticket = batcher.submit(("embed",), [ids(3, n) for n in range(6)], [3] * 6)  # three batches of two
        await ticket.future
        return ticket

    ticket = asyncio.run(scenario())
    batcher.close()
    assert ticket.inference_seconds == 3.0  # its three batches, one after another
    assert ticket.queue_seconds == 0.0  # none of its sentences waited while no batch of it ran
