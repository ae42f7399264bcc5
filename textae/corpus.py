"""Reading plain-text corpora (one sentence a line) as a stream, with clear errors (torch-free)."""

from __future__ import annotations

import glob
import gzip
import io
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from textae.errors import TextaeError

# A sentence longer than this many characters is cut before tokenization: the model only ever sees
# max_length tokens, and tokenizing a multi-megabyte line in full would waste seconds and memory.
DEFAULT_MAX_CHARS = 4096
# A line is read at most this many bytes at a time; the rest of a longer line is skipped, so a
# file without line breaks (a dump, a disk image) cannot fill memory. Far above DEFAULT_MAX_CHARS.
MAX_LINE_BYTES = 1 << 20


def resolve_paths(patterns: Iterable[str]) -> list[Path]:
    """Expand globs; every pattern must name at least one readable regular file (a corpus is read twice)."""
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise TextaeError(f"{pattern}: no file matches this pattern")
            candidates = [Path(m) for m in matches]
        else:
            candidates = [Path(pattern)]
        for path in candidates:
            check_readable_file(path, streams=False)
            paths.append(path)
    if not paths:
        raise TextaeError("no corpus file given")
    return paths


def check_readable_file(path: Path, *, streams: bool = True) -> None:
    """A file textae can read lines from. Pipes and FIFOs (`<(zcat x.gz)`) are streams, read once:
    fine for commands that read their input once (streams=True), not for training, which reads
    the corpus twice. Devices (/dev/zero) and sockets are refused: they never end."""
    if not path.exists():
        raise TextaeError(f"{path}: no such file")
    if path.is_dir():
        raise TextaeError(f"{path}: is a directory, expected a text file")
    if not path.is_file() and not (streams and stat.S_ISFIFO(path.stat().st_mode)):
        kind = "a FIFO or pipe, which training would have to read twice" if stat.S_ISFIFO(path.stat().st_mode) else "a device or socket"
        raise TextaeError(f"{path}: not a regular file ({kind}); save the text to a file first")
    if not os.access(path, os.R_OK):
        raise TextaeError(f"{path}: not readable (permission denied)")


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if str(path) == "-":
        import sys

        return sys.stdin.buffer  # type: ignore[return-value]
    return open(path, "rb")


def iter_numbered_lines(path: Path, *, name: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text without its line break) of every line; TextaeError names file and line.

    name is how errors name the file (default: path), for a reader that opens a file by another
    path than the one the user gave (a Ray worker opens it by its absolute path).
    """
    path = Path(path)
    where = path if name is None else name
    lineno = 0
    try:
        with _open_binary(path) as handle:
            for lineno, (raw, cut) in enumerate(_bounded_lines(handle), start=1):
                if b"\x00" in raw:
                    raise TextaeError(f"{where}:{lineno}: contains NUL bytes; this looks like a binary file, not text")
                try:
                    text = _decode(raw, cut)
                except UnicodeDecodeError as exc:
                    raise TextaeError(
                        f"{where}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                        "convert the file to UTF-8"
                    ) from None
                yield lineno, text.rstrip("\r\n")
    except gzip.BadGzipFile:
        raise TextaeError(f"{where}: not a valid gzip file") from None
    except EOFError:
        raise TextaeError(f"{where}: gzip file is truncated (after line {lineno})") from None
    except IsADirectoryError:
        raise TextaeError(f"{where}: is a directory, expected a text file") from None
    except PermissionError:
        raise TextaeError(f"{where}: not readable (permission denied)") from None


def _bounded_lines(handle: io.BufferedIOBase) -> Iterator[tuple[bytes, bool]]:
    """(first MAX_LINE_BYTES bytes of each line, whether the line was longer)."""
    while True:
        line = handle.readline(MAX_LINE_BYTES)
        if not line:
            return
        cut = len(line) == MAX_LINE_BYTES and not line.endswith(b"\n")
        while cut:  # skip the rest of an overlong line
            rest = handle.readline(MAX_LINE_BYTES)
            if not rest or rest.endswith(b"\n"):
                break
        yield line, cut


def _decode(raw: bytes, cut: bool) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(raw) - 3:  # the cut split the last character
            return raw[: exc.start].decode("utf-8")
        raise


def iter_numbered_sentences(path: Path, max_chars: int = DEFAULT_MAX_CHARS, *, name: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, sentence) of every non-empty line of one file: stripped and cut to max_chars."""
    for lineno, text in iter_numbered_lines(path, name=name):
        text = text.strip()
        if text:
            yield lineno, text[:max_chars]


def iter_file_lines(path: Path, max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[str]:
    """Yield the non-empty, stripped lines of one file, each cut to max_chars."""
    for _, text in iter_numbered_sentences(path, max_chars):
        yield text


def chunked(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of up to size consecutive items: batch work on a stream without holding all of it."""
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def iter_corpus(paths: Iterable[Path], max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[str]:
    for path in paths:
        yield from iter_file_lines(Path(path), max_chars=max_chars)
