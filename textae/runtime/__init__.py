"""The production side (torch-free): load an export folder and embed, reconstruct, score and decode.

Imports only numpy, onnxruntime, tokenizers, the standard library and torch-free textae modules;
tests/contract/test_boundary.py keeps it that way.
"""

from textae.runtime.model import TextAE

__all__ = ["TextAE"]
