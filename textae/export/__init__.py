"""The bridge (torch + onnx): turn a run folder into the export folder the runtime reads.

The export folder (graphs, tokenizer.json, the textae.json manifest of `textae.manifest`) is the
whole interface between the two sides: nothing in `textae.runtime` knows this package exists.
"""

from typing import Any

__all__ = ["default_export_dir", "export_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from textae.export import folder

        return getattr(folder, name)
    raise AttributeError(f"module 'textae.export' has no attribute {name!r}")
