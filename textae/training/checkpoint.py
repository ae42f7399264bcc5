"""The run folder: what training writes and what `textae export` rebuilds the model from.

    RUN_DIR/
      config.json      {"model": ModelConfig, "train": TrainConfig} as JSON
      tokenizer.json   the HF tokenizer the model was trained with
      checkpoint.pt    latest resumable state (model, optimizer, scheduler, RNG, step, position)
      best.pt          weights of the best validation step, with their model config and metrics
      metrics.jsonl    one JSON record per log/validation event
      loss.png         training and validation loss curves
      summary.json     best validation numbers and where things were written (at the end)
      tokens/KEY/      the token store: the corpus as token ids, keyed by what they depend on

This module is the one author of both checkpoints: it writes and reads checkpoint.pt (a run resumes
from it) and best.pt (the export rebuilds the model from it). Checkpoints hold only tensors and
plain Python values so they load with weights_only=True.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from textae.atomic import atomic_write_bytes
from textae.config import ModelConfig, TrainConfig, from_dict, to_dict
from textae.errors import TextaeError
from textae.tokenizer import TOKENIZER_FILE
from textae.training import distributed
from textae.training.model import Autoencoder

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
METRICS_FILE = "metrics.jsonl"
LOSS_PLOT_FILE = "loss.png"
SUMMARY_FILE = "summary.json"
TOKENS_DIR = "tokens"


@dataclass
class TrainingState:
    """Where a run stands; everything here goes into checkpoint.pt."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    best_valid_loss: float = math.inf
    best_step: int = -1
    validations_without_improvement: int = 0
    tokens_seen: float = 0.0  # target tokens over all ranks
    stopped_early: bool = False
    world_size: int = 1  # processes the run was started with (a resume must match)
    validated_step: int = -1  # the last step validated (a resume after the final validation skips it)
    train_seconds: float = 0.0  # wall-clock seconds in the training loop over all sessions (the time budget's)
    planned_steps: int | None = None  # under a time budget: the step count the schedule ends at
    losses_since_record: list[float] = field(default_factory=list)  # metrics.jsonl logs their mean
    contrastive_since_record: list[float] = field(default_factory=list)  # the contrastive term's, likewise


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
    except Exception as exc:  # noqa: BLE001 - truncated zip, wrong format, or a pickle that needs arbitrary code
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
        raise TextaeError(
            f"{path}: checkpoint does not match its model config ({str(exc).splitlines()[0][:200]})"
        ) from None
    model.eval()
    return model, checkpoint


def save_best(
    run_dir: Path, model: torch.nn.Module, model_config: ModelConfig, step: int, metrics: dict[str, float]
) -> None:
    """best.pt: the weights of the best validation so far, with what rebuilds and describes them."""
    save_checkpoint(
        run_dir / BEST_FILE,
        {"model": cpu_state_dict(model), "model_config": to_dict(model_config), "step": step, "metrics": metrics},
    )


def save_training_checkpoint(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng_states: list[dict[str, torch.Tensor]],
    state: TrainingState,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> None:
    """checkpoint.pt: everything a resumed run needs to continue as if it had never stopped."""
    save_checkpoint(
        run_dir / CHECKPOINT_FILE,
        {
            "model": cpu_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_states": rng_states,  # one per rank (rng_state of each)
            "training_state": dict(vars(state)),
            "model_config": to_dict(model_config),
            "train_config": to_dict(train_config),
        },
    )


def restore_training_checkpoint(
    run_dir: Path,
    model: Autoencoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    workers: distributed.Workers,
) -> TrainingState:
    """Load checkpoint.pt into the run's objects, and this rank's random state into torch."""
    path = run_dir / CHECKPOINT_FILE
    saved = load_checkpoint(path)
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainingState(**saved["training_state"])
        rng = saved["rng_states"][workers.rank]
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
        raise TextaeError(f"{path}: checkpoint does not fit this run ({str(exc).splitlines()[0][:200]})") from None
    if state.world_size != workers.world_size:
        raise TextaeError(
            f"{run_dir}: was trained with {state.world_size} process(es); resume it with the same number, "
            f"not {workers.world_size}"
        )
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and workers.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], workers.device)
    return state


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch random state (dropout masks, sampling coins), as checkpoint.pt keeps it."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
