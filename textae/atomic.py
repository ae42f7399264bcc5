"""Atomic file writes: a reader sees the old file or the complete new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def ordinary_mode(*, folder: bool = False) -> int:
    """The permission bits open() (or mkdir(), for a folder) would give under the current umask:
    what files made private by mkstemp/mkdtemp get once they are complete."""
    umask = os.umask(0)  # the only way to read the umask is to set it, so set it straight back
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside path, fsync it, then rename it over path."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, ordinary_mode())  # mkstemp makes 0600 files; give the permissions open() would
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
