"""The training side (torch): the model, its data, the loop, checkpoints and distributed training.

Its one product is a run folder (config.json, tokenizer.json, checkpoint.pt, ...), which
`textae.export` turns into the export folder that the torch-free side reads.
"""

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    # lazy, so that importing a light submodule (schedules, plots) does not build the whole loop
    if name == "train":
        from textae.training.loop import train

        return train
    raise AttributeError(f"module 'textae.training' has no attribute {name!r}")
