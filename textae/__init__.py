"""textae: recurrent sentence autoencoders trained with torch, served with onnxruntime.

Only torch-free names are exported here, so `import textae` works in a production install;
`textae.TextAE` loads onnxruntime on first use.
"""

from typing import Any

from textae.config import ModelConfig, TrainConfig
from textae.errors import TextaeError

__version__ = "0.1.0"

__all__ = ["ModelConfig", "TextAE", "TextaeError", "TrainConfig", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "TextAE":
        from textae.runtime.model import TextAE

        return TextAE
    raise AttributeError(f"module 'textae' has no attribute {name!r}")
