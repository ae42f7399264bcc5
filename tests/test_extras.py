"""textae.extras: the one-line hint for a missing extra (the CLI side is tests/reliability/test_threads_extras.py)."""

from __future__ import annotations

import pytest

from textae.errors import TextaeError
from textae.extras import import_optional, missing_extra


def test_missing_extra_names_the_pip_install_for_known_modules_only() -> None:
    error = missing_extra(ModuleNotFoundError("no torch", name="torch"), "textae train")
    assert str(error) == 'textae train needs torch, which is not installed: pip install "textae[train]"'
    assert "textae[eval]" in str(missing_extra(ModuleNotFoundError(name="sklearn.linear_model"), "the probe"))
    assert missing_extra(ModuleNotFoundError(name="not_an_extra"), "x") is None
    with pytest.raises(TextaeError, match=r'the map needs matplotlib, which is not installed: pip install "textae\[eval\]"'):
        _import_blocked("matplotlib", "the map")
    with pytest.raises(ModuleNotFoundError):  # a module no extra provides is a real bug, not a hint
        import_optional("surely_not_a_module_of_textae", "x")


def _import_blocked(module: str, purpose: str) -> None:
    import sys

    saved = sys.modules.get(module)
    sys.modules[module] = None  # type: ignore[assignment]
    try:
        import_optional(module, purpose)
    finally:
        if saved is None:
            del sys.modules[module]
        else:
            sys.modules[module] = saved
