"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

A write that fails (a full disk, a kill) leaves the previous file untouched under its name. A
full disk is reported as NoSpaceError, a TextaeError, so the CLI prints one line naming the file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from textae import faults
from textae.errors import NoSpaceError

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def ordinary_mode(*, folder: bool = False) -> int:
    """The permission bits open() (or mkdir(), for a folder) would give under the current umask:
    what files made private by mkstemp/mkdtemp get once they are complete."""
    umask = os.umask(0)  # the only way to read the umask is to set it, so set it straight back
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside path, fsync it, then rename it over path."""
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise no_space_error(exc, path) or exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, ordinary_mode())  # mkstemp makes 0600 files; give the permissions open() would
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())  # a full disk may only say so here (delayed allocation, NFS)
        faults.reached(f"write:{path.name}")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise no_space_error(exc, path) or exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def no_space_error(exc: OSError, path: Path) -> NoSpaceError | None:
    """The one-line error for a full disk or quota while writing path; None for other OS errors."""
    if exc.errno not in NO_SPACE_ERRNOS:
        return None
    return NoSpaceError(f"{path}: no space left on the device ({errno.errorcode[exc.errno]}); the previous file is unchanged")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
