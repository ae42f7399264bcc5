"""The run folder: what training writes and what `textae export` rebuilds the model from.

    RUN_DIR/
      config.json      {"model": ModelConfig, "train": TrainConfig} as JSON
      tokenizer.json   the HF tokenizer the model was trained with
      checkpoint.pt    latest resumable state (model, optimizer, scheduler, RNG, step, position)
      best.pt          weights of the best validation step, with their model config and metrics
      metrics.jsonl    one JSON record per log/validation event
      loss.png         training and validation loss curves
      summary.json     best validation numbers and where things were written (at the end)

Checkpoints hold only tensors and plain Python values so they load with weights_only=True.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from textae.atomic import atomic_write_bytes
from textae.config import ModelConfig, from_dict
from textae.errors import TextaeError
from textae.tokenizer import TOKENIZER_FILE
from textae.training.model import Autoencoder

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
METRICS_FILE = "metrics.jsonl"
LOSS_PLOT_FILE = "loss.png"
SUMMARY_FILE = "summary.json"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialize in memory first, then write atomically: a killed run never leaves half a file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TextaeError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, wrong format, or a pickle that needs arbitrary code
        raise TextaeError(f"{path}: not a readable textae checkpoint ({str(exc).splitlines()[0][:200]})") from None


def is_run_dir(run_dir: Path) -> bool:
    return (Path(run_dir) / CONFIG_FILE).is_file() and (Path(run_dir) / TOKENIZER_FILE).is_file()


def load_model_from_run(run_dir: Path, which: str = "best") -> tuple[Autoencoder, dict[str, Any]]:
    """Rebuild the trained model from a run folder alone; returns (model in eval mode, checkpoint)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TextaeError(f"{run_dir}: run folder not found")
    if not is_run_dir(run_dir):
        raise TextaeError(f"{run_dir}: not a textae run folder (needs {CONFIG_FILE} and {TOKENIZER_FILE})")
    path = run_dir / (BEST_FILE if which == "best" else CHECKPOINT_FILE)
    if which == "best" and not path.is_file():
        path = run_dir / CHECKPOINT_FILE  # a run stopped before its first validation
    if not path.is_file():
        raise TextaeError(f"{run_dir}: holds no checkpoint yet ({BEST_FILE} or {CHECKPOINT_FILE})")
    checkpoint = load_checkpoint(path)
    try:
        config = from_dict(ModelConfig, checkpoint["model_config"], where=str(path))
        model = Autoencoder(config)
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise TextaeError(f"{path}: checkpoint does not match its model config ({str(exc).splitlines()[0][:200]})") from None
    model.eval()
    return model, checkpoint
