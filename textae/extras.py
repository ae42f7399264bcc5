"""Optional dependencies: import one, or say in one line which extra installs it (stdlib only, torch-free).

The core install (numpy, tokenizers, onnxruntime, typer, rich) runs the runtime commands; the rest
come from extras declared in pyproject.toml. A command that needs a missing one ends with
`textae: error: ... needs torch, which is not installed: pip install "textae[train]"` and status 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from textae.errors import TextaeError

# top-level module -> the extra of pyproject.toml that installs it
MODULE_EXTRAS = {
    "torch": "train",
    "onnx": "train",
    "sklearn": "eval",
    "sacrebleu": "eval",
    "matplotlib": "eval",  # also in train, where the loss plot is skipped without it
    "gensim": "bench",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "ray": "ray",
    "pyarrow": "ray",  # ray[data] brings it and pandas; textae.ray writes Parquet with it
    "pandas": "ray",
}


def install_hint(extra: str) -> str:
    return f'pip install "textae[{extra}]"'


def missing_extra(error: ImportError, purpose: str) -> TextaeError | None:
    """The one-line error for an ImportError of an optional module, or None for any other ImportError."""
    module = (error.name or "").split(".")[0]
    extra = MODULE_EXTRAS.get(module)
    if extra is None:
        return None
    return TextaeError(f"{purpose} needs {module}, which is not installed: {install_hint(extra)}")


def import_optional(module: str, purpose: str) -> ModuleType:
    """Import a module of an extra, or raise the TextaeError that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = missing_extra(exc, purpose)
        if error is None:
            raise
        raise error from None
