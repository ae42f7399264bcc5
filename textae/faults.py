"""Named points where the reliability tests and benchmark kill the process (inert unless asked).

Killing a process at a random moment mostly lands in the slow phases (importing torch, training
steps); the phases that matter most for crash safety (a checkpoint half written, the token store
half built, the summary not yet written) last milliseconds. So the code names those moments, and a
test can ask for a SIGKILL at the Nth time one is reached:

    TEXTAE_KILL_AT=write:checkpoint.pt:2 textae train ...   # dies just before the 2nd checkpoint rename
    TEXTAE_PHASE_TRACE=/tmp/trace textae train ...          # appends each phase reached, one a line

Both variables are read once at import; without them `reached` is one attribute check.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "TEXTAE_KILL_AT"  # "PHASE" or "PHASE:N" (N counts from 1; default 1)
TRACE_ENV = "TEXTAE_PHASE_TRACE"  # a file to append every phase reached to


def _parse_kill_at(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    phase, _, count = value.rpartition(":")
    if phase and count.isdigit():
        return phase, int(count)
    return value, 1


_KILL_AT = _parse_kill_at(os.environ.get(KILL_AT_ENV))
_TRACE_PATH = os.environ.get(TRACE_ENV)
_ACTIVE = _KILL_AT is not None or bool(_TRACE_PATH)
_counts: dict[str, int] = {}
_trace_fd: int | None = None


def reached(phase: str) -> None:
    """Mark that the process reached `phase`; kill it here when TEXTAE_KILL_AT asks for this moment."""
    if not _ACTIVE:
        return
    global _trace_fd
    count = _counts[phase] = _counts.get(phase, 0) + 1
    if _TRACE_PATH:
        if _trace_fd is None:
            _trace_fd = os.open(_TRACE_PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(_trace_fd, f"{phase}\n".encode())  # unbuffered: the line survives a SIGKILL
    if (phase, count) == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
