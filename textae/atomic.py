"""Atomic writes of files and folders: a reader sees the old one or the complete new one, never half of one.

A write that fails (a full disk, a kill) leaves the previous file untouched under its name. A
full disk is reported as NoSpaceError, a TextaeError, so the CLI prints one line naming the file.
A folder (an export) is built beside its destination under a name that carries the builder's pid,
then renamed into place; a later build deletes the leftovers of builders that are gone.
"""

from __future__ import annotations

import errno
import os
import shutil
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
        error = no_space_error(exc, path)
        if error is None:
            raise
        raise error from exc
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
        error = no_space_error(exc, path)
        if error is None:
            raise
        raise error from exc
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


# --- folders ------------------------------------------------------------------------------------


def new_build_folder(out_dir: Path) -> Path:
    """A private, empty folder beside out_dir to build its next version in, after deleting the
    build folders of earlier builders that were killed."""
    remove_stale_builds(out_dir)
    # the pid in the name tells a later build whether this builder is still running
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", suffix=".partial", dir=out_dir.parent))


def finish_folder(folder: Path) -> None:
    """Flush every file to disk and give the folder ordinary permissions: mkdtemp and the atomic
    writers create private (0700/0600) entries, but an export is meant to be read by services."""
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        path.chmod(ordinary_mode())
    folder.chmod(ordinary_mode(folder=True))


def remove_stale_builds(out_dir: Path) -> None:
    """Delete the build folders of earlier exports to out_dir that were killed (their process is gone)."""
    prefix = f".{out_dir.name}."
    for entry in out_dir.parent.iterdir():
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if entry.name.startswith(prefix) and entry.is_dir() and entry.suffix in (".partial", ".old") and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def replace_folder(build_dir: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; an older export there is moved aside, then deleted."""
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
        os.replace(build_dir, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(build_dir, out_dir)
