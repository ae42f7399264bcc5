"""Dynamic batching: sentences from all requests share onnxruntime calls made on one inference thread.

The event loop only enqueues work and awaits an asyncio future; one thread owns every onnxruntime
call (so calls never compete for the intra-op threads), in the spirit of text-embeddings-inference's
queue and Infinity's batch handler:

    request handler ── submit(items) ──▶ bounded queue ──▶ inference thread: form a batch, run it
         ▲                                                          │
         └──── asyncio future, resolved with loop.call_soon_threadsafe ◀┘

A batch holds items of one kind (embed, score, reconstruct or decode with one max_length). It always
contains the oldest waiting item (so nothing starves), plus the waiting items whose lengths are
closest to it, up to `max_batch_size` rows and `max_batch_tokens` padded tokens (rows x padded width).
Widths are rounded up to a multiple of `bucket_multiple` (capped at the model's max_length), which
bounds the number of input shapes onnxruntime ever sees. When fewer items than a full batch wait and
more requests are on their way (`expect`: parsed, being tokenized), the thread waits until the oldest
item has waited `max_wait_ms` for them; a lone client never waits, and under load the queue fills
while the previous batch runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("textae.serve")


class QueueFull(Exception):
    """The queue cannot take the request's items now (the client should retry later: 429)."""


class QueueClosed(Exception):
    """The batcher is shutting down or its inference thread has stopped (503)."""


@dataclass
class Ticket:
    """One request's share of the queue: its items' results and the times the request spent waiting."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Any]]
    results: list[Any]
    remaining: int
    enqueued_at: float
    # queue + inference = enqueue to its last batch's end, with no overlap: a request split over two
    # batches spent the first batch's run in inference, not in the queue, while its rest waited.
    queue_seconds: float = 0.0  # from enqueue to its last batch's end, less inference_seconds
    inference_seconds: float = 0.0  # summed duration of the batches its items ran in
    cancelled: bool = False  # set by Batcher.cancel: the client went away, drop the items not yet run
    failed: bool = False


@dataclass
class Item:
    key: Hashable  # items with equal keys may share a batch
    payload: Any  # token ids, or a vector
    length: int  # tokens (1 for a vector)
    ticket: Ticket
    index: int  # position in the request
    sequence: int  # arrival order, for FIFO ties


@dataclass
class Batch:
    key: Hashable
    payloads: list[Any]
    width: int  # padded length every row is fed with


@dataclass
class BatchStats:
    """What the batcher reports after each batch (for metrics)."""

    size: int
    padded_tokens: int
    seconds: float
    queue_seconds: list[float] = field(default_factory=list)
    failed: bool = False


RunBatch = Callable[[Batch], Sequence[Any]]


class Batcher:
    """Owns the inference thread. `submit` is called from the event loop; `run_batch` on the thread."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_wait_ms: float,
        max_queue: int,
        max_length: int,
        bucket_multiple: int = 8,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.max_length = max_length
        self.bucket_multiple = bucket_multiple
        self._on_batch = on_batch or (lambda stats: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._pending: list[Item] = []
        self._arriving = 0  # requests between `expect` and `submit` (or `abandon`)
        self._condition = threading.Condition()
        self._closed = False
        self._sequence = itertools.count()
        self._thread = threading.Thread(target=self._serve_forever, name="textae-inference", daemon=True)

    # --- event-loop side ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    @property
    def depth(self) -> int:
        return len(self._pending)

    def expect(self) -> None:
        """A request is on its way (being tokenized): a batch may wait up to max_wait_ms for it."""
        with self._condition:
            self._arriving += 1

    def abandon(self) -> None:
        """An expected request will not be submitted (it was refused); call once per `expect`."""
        with self._condition:
            self._arriving = max(0, self._arriving - 1)
            self._condition.notify()

    def submit(self, key: Hashable, payloads: Sequence[Any], lengths: Sequence[int], *, expected: bool = False) -> Ticket:
        """Queue one request's items, all or none; await `ticket.future` for their results in order."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(loop, loop.create_future(), [None] * len(payloads), len(payloads), time.perf_counter())
        if not payloads:
            if expected:
                self.abandon()
            ticket.future.set_result([])
            return ticket
        with self._condition:
            if expected:
                self._arriving = max(0, self._arriving - 1)
            if self._closed or not self._thread.is_alive():
                raise QueueClosed("the server is shutting down")
            if len(self._pending) + len(payloads) > self.max_queue:
                raise QueueFull(f"{len(self._pending)} sentences are waiting; the queue holds {self.max_queue}")
            for index, (payload, length) in enumerate(zip(payloads, lengths)):
                self._pending.append(Item(key, payload, length, ticket, index, next(self._sequence)))
            depth = len(self._pending)
            self._condition.notify()
        self._on_depth(depth)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Drop the request's items that have not run yet (its client went away); frees their queue slots."""
        ticket.cancelled = True
        with self._condition:
            self._drop_cancelled_locked()
            depth = len(self._pending)
        self._on_depth(depth)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued, stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- inference-thread side ----------------------------------------------------------------

    def width_for(self, length: int) -> int:
        """The padded width of a row of `length` tokens: rounded up to the bucket, at least 1."""
        multiple = self.bucket_multiple
        return min(max(self.max_length, 1), -(-max(length, 1) // multiple) * multiple)

    def _serve_forever(self) -> None:
        while True:
            with self._condition:
                items = self._next_batch_locked()
                depth = len(self._pending)
            if items is None:
                return
            self._on_depth(depth)
            if items:
                self._run(items)

    def _next_batch_locked(self) -> list[Item] | None:
        """Wait for work and take the next batch (None: closed and empty). Holds the condition."""
        while True:
            self._drop_cancelled_locked()
            if not self._pending:
                if self._closed:
                    return None
                self._condition.wait()
                continue
            oldest = self._pending[0]
            if self._closed:
                break
            waited = time.perf_counter() - oldest.ticket.enqueued_at
            if not self._arriving or waited >= self.max_wait or self._count_key_locked(oldest.key) >= self.max_batch_size:
                break
            self._condition.wait(self.max_wait - waited)
        return self._take_batch_locked()

    def _drop_cancelled_locked(self) -> None:
        if any(item.ticket.cancelled or item.ticket.failed for item in self._pending):
            self._pending = [item for item in self._pending if not (item.ticket.cancelled or item.ticket.failed)]

    def _count_key_locked(self, key: Hashable) -> int:
        return sum(1 for item in self._pending if item.key == key)

    def _take_batch_locked(self) -> list[Item]:
        """The oldest item and the same-key items nearest to it in length, within size and token caps."""
        oldest = self._pending[0]
        candidates = sorted((item for item in self._pending if item.key == oldest.key), key=lambda item: (item.length, item.sequence))
        position = next(i for i, item in enumerate(candidates) if item is oldest)
        chosen = [oldest]
        longest = oldest.length
        below, above = position - 1, position + 1
        while len(chosen) < self.max_batch_size:
            take_below = below >= 0 and (
                above >= len(candidates) or oldest.length - candidates[below].length <= candidates[above].length - oldest.length
            )
            if take_below:
                candidate = candidates[below]
            elif above < len(candidates):
                candidate = candidates[above]
            else:
                break
            if (len(chosen) + 1) * self.width_for(max(longest, candidate.length)) > self.max_batch_tokens:
                break  # the nearest candidate does not fit: any farther one is no better
            chosen.append(candidate)
            longest = max(longest, candidate.length)
            if take_below:
                below -= 1
            else:
                above += 1
        taken = {id(item) for item in chosen}
        self._pending = [item for item in self._pending if id(item) not in taken]
        return chosen

    def _run(self, items: list[Item]) -> None:
        started = time.perf_counter()
        width = self.width_for(max(item.length for item in items))
        batch = Batch(items[0].key, [item.payload for item in items], width)
        try:
            results = self._run_batch(batch)
            if len(results) != len(items):
                raise RuntimeError(f"batch of {len(items)} gave {len(results)} results")
            error: BaseException | None = None
        except Exception as exc:  # an onnxruntime failure must fail this batch only, never the thread
            logger.exception("inference failed for a batch of %d", len(items))
            results, error = [None] * len(items), exc
        finished = time.perf_counter()
        seconds = finished - started
        tickets: dict[int, Ticket] = {}
        queue_seconds = []
        for item, result in zip(items, results):
            ticket = item.ticket
            queue_seconds.append(started - ticket.enqueued_at)
            if id(ticket) not in tickets:
                tickets[id(ticket)] = ticket
                ticket.inference_seconds += seconds
                ticket.queue_seconds = finished - ticket.enqueued_at - ticket.inference_seconds
            ticket.results[item.index] = result
            ticket.remaining -= 1
        for ticket in tickets.values():
            if error is not None and not ticket.failed:
                ticket.failed = True
                _resolve(ticket, error)
            elif error is None and ticket.remaining == 0 and not ticket.failed:
                _resolve(ticket, None)
        self._on_batch(BatchStats(len(items), len(items) * width, seconds, queue_seconds, failed=error is not None))


def _resolve(ticket: Ticket, error: BaseException | None) -> None:
    def settle() -> None:
        if ticket.future.done():  # the handler gave up on it (client gone)
            return
        if error is None:
            ticket.future.set_result(ticket.results)
        else:
            ticket.future.set_exception(InferenceFailed(type(error).__name__))

    try:
        ticket.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the event loop has closed: nobody is waiting any more
        pass


class InferenceFailed(Exception):
    """onnxruntime (or the code around it) raised while running a batch; the message is the exception type only."""
