"""Handing freed heap memory back to the OS during training.

Batches of varying shape fragment glibc's heap, and the blocks they free stay in the process: without
a periodic trim, peak RSS wanders for reasons unrelated to the corpus. A trim is not free, so the
loop trims every TRIM_EVERY steps, which keeps most of the benefit at little of the cost
(docs/benchmarks.md, "Memory and processes").
"""

from __future__ import annotations

import ctypes
from typing import Any

TRIM_EVERY = 10  # optimisation steps between trims


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc's malloc_trim; a no-op elsewhere)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None
