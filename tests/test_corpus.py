import gzip
from pathlib import Path

import pytest

from textae.corpus import iter_corpus, iter_file_lines, resolve_paths
from textae.errors import TextaeError


def test_reads_plain_gz_and_globs_skipping_empty_lines(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first line\n\n  \nsecond line  \n", encoding="utf-8")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("third line\n")
    paths = resolve_paths([str(tmp_path / "*.txt"), str(tmp_path / "b.txt.gz")])
    assert list(iter_corpus(paths)) == ["first line", "second line", "third line"]


def test_missing_file_and_directory_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(TextaeError, match="no such file"):
        resolve_paths([str(tmp_path / "nope.txt")])
    with pytest.raises(TextaeError, match="is a directory"):
        resolve_paths([str(tmp_path)])
    with pytest.raises(TextaeError, match="no file matches"):
        resolve_paths([str(tmp_path / "*.none")])


def test_binary_file_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"ok line\n\x00\x01\x02binary\n")
    with pytest.raises(TextaeError, match=r"data\.bin:2: .*binary"):
        list(iter_file_lines(path))


def test_invalid_utf8_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("fine\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(TextaeError, match=r"latin1\.txt:2: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        list(iter_file_lines(path))


def test_corrupt_gzip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(TextaeError, match="not a valid gzip"):
        list(iter_file_lines(path))


def test_huge_line_is_cut_not_loaded_whole_into_the_model(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    path.write_text("word " * 2_000_000 + "\nshort\n", encoding="utf-8")  # a 10 MB line
    lines = list(iter_file_lines(path, max_chars=100))
    assert [len(line) for line in lines] == [100, 5]
