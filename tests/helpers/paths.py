"""Where the repository's files are, for tests in any folder."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# written by tools/make_tiny_export.py; tests/contract/test_pinned.py pins its vectors
TINY_EXPORT = ROOT / "tests" / "data" / "tiny-export"
