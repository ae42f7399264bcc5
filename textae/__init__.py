"""textae: recurrent sentence autoencoders trained with torch, served with onnxruntime.

Only torch-free names are imported here, so `import textae` works in a production install.
"""

from textae.config import ModelConfig, TrainConfig
from textae.errors import TextaeError

__version__ = "0.1.0"

__all__ = ["ModelConfig", "TextaeError", "TrainConfig", "__version__"]
