"""The driver's side of a job: connect to Ray, Ray Data settings for the job, errors back as one line."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import ray
import ray.data

from textae.errors import TextaeError


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the Ray the caller already initialised, or connect for this job (ray.init: "auto",
    HOST:PORT, or None for RAY_ADDRESS or else a new local cluster) and disconnect after."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address)
    except ConnectionError as exc:
        raise TextaeError(f"{address}: cannot connect to a Ray cluster ({str(exc).splitlines()[0][:200]})") from None
    try:
        yield
    finally:
        ray.shutdown()


JOB_BLOCK_BYTES = 1 << 20  # a read chunk of 4,096 lines of text is a few hundred KB


@contextmanager
def job_context(*, ray_progress: bool) -> Iterator[None]:
    """Ray Data settings while one job's Dataset is built and run.

    A Dataset keeps a copy of the DataContext it was made under, so this must wrap its creation.
    ray_progress=False turns off Ray's progress output (the job may draw its own). Ray
    Data's console errors are held back: the job's exception is the one report (the one-line
    TextaeError for a user error, the full traceback otherwise); ray-data.log keeps them all.
    """
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.raise_original_map_exception, context.target_max_block_size
    context.enable_progress_bars = ray_progress
    # Ray Data buffers a map task's output into blocks of up to target_max_block_size (128 MiB by
    # default), so the read task's chunks of one file came out as ONE block, which one actor then
    # embedded alone while the others idled, holding the whole file in memory. Blocks of about one
    # chunk spread a file over every actor (docs/ray.md has the figures).
    context.target_max_block_size = JOB_BLOCK_BYTES
    # Ray Data wraps what a map function raises in a UserCodeException that reaches the driver
    # without it (only as text); raised as it is, a TextaeError arrives whole (user_error)
    context.raise_original_map_exception = True
    consoles = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    for handler in consoles:
        handler.addFilter(_below_error)
    try:
        with warnings.catch_warnings():
            # counted before the read tasks run, when each file is one input: wrong for a file of many blocks
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
            yield
    finally:
        context.enable_progress_bars, context.raise_original_map_exception, context.target_max_block_size = saved
        for handler in consoles:
            handler.removeFilter(_below_error)


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def user_error(exc: BaseException) -> TextaeError | None:
    """The TextaeError a Ray task raised, as its one line (Ray wraps it and appends retry advice), or None."""
    stack, seen = [exc], set()
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, TextaeError) and not isinstance(error, ray.exceptions.RayError):
            return TextaeError(str(error).split("\n", 1)[0])
        linked = (getattr(error, "cause", None), error.__cause__, error.__context__)  # RayTaskError.cause: the task's own
        stack.extend(e for e in linked if isinstance(e, BaseException))
    return None
