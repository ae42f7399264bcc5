"""What a run tells its user: a line at the start, the progress bar, a line per validation, and at
the end the summary (summary.json, loss.png and a table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from textae import faults
from textae.config import TrainConfig, save_json
from textae.training import distributed
from textae.training.budget import format_seconds
from textae.training.checkpoint import (
    BEST_FILE,
    CHECKPOINT_FILE,
    LOSS_PLOT_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    TOKENIZER_FILE,
    TrainingState,
)
from textae.training.data import TokenizedCorpus
from textae.training.metrics import read_metrics
from textae.training.model import Autoencoder, count_parameters


def announce_start(
    console: Console,
    config: TrainConfig,
    model: Autoencoder,
    train_data: TokenizedCorpus,
    valid_data: TokenizedCorpus,
    total_steps: int,
    workers: distributed.Workers,
) -> None:
    """One line on what a new run is about to do."""
    budget = config.time_budget_seconds
    console.print(
        f"training {count_parameters(model):,} parameters on {len(train_data):,} sentences "
        f"({train_data.num_tokens:,} tokens), validating on {len(valid_data):,}; "
        + (f"{total_steps:,} steps" if budget is None else f"a time budget of {format_seconds(budget)}")
        + f" on {workers.world_size} process(es), device {workers.device}, precision {config.precision}; "
        f"{config.optimizer} at peak learning rate {config.peak_learning_rate:g}"
    )


def make_progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]step"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TextColumn("teacher forcing {task.fields[tf]:.2f}"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def show_validation(console: Console, step: int, result: dict[str, float], best: bool) -> None:
    console.print(
        f"step {step:>6}  valid loss {result['loss']:.3f}  token acc {result['token_accuracy']:.3f}  "
        f"free-running token acc {result['free_running_token_accuracy']:.3f}  "
        f"exact {result['free_running_exact_match']:.3f}" + ("  (best)" if best else "")
    )


def write_summary(
    run_dir: Path, state: TrainingState, total_steps: int, console: Console, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write summary.json and loss.png, show the summary as a table, and return it."""
    faults.reached("finish")
    records = read_metrics(run_dir)
    valid = [r for r in records if r["type"] == "valid"]
    best = next((r for r in valid if r["step"] == state.best_step), valid[-1] if valid else {})
    plot_path = run_dir / LOSS_PLOT_FILE
    try:
        from textae.training.plots import plot_losses

        plot_losses(records, plot_path)
    except ImportError:
        plot_path = None  # type: ignore[assignment]
    summary = {
        "run_dir": str(run_dir),
        "finished": True,
        "steps": state.step,
        "total_steps": total_steps,
        "stopped_early": state.stopped_early,
        "tokens_seen": int(state.tokens_seen),
        **extra,
        "best_step": state.best_step,
        "best_valid": {k: v for k, v in best.items() if k not in ("type", "epoch")},
        "files": {
            "best": str(run_dir / BEST_FILE),
            "checkpoint": str(run_dir / CHECKPOINT_FILE),
            "metrics": str(run_dir / METRICS_FILE),
            "loss_plot": str(plot_path) if plot_path else None,
            "tokenizer": str(run_dir / TOKENIZER_FILE),
        },
    }
    save_json(run_dir / SUMMARY_FILE, summary)
    table = Table(title=f"textae run {run_dir}", show_header=False)
    table.add_row("steps", f"{state.step:,}" + (" (early stop)" if state.stopped_early else ""))
    for key in ("loss", "token_accuracy", "free_running_token_accuracy", "free_running_exact_match"):
        if key in best:
            table.add_row(f"best valid {key.replace('_', ' ')}", f"{best[key]:.4f}")
    table.add_row("best step", str(state.best_step))
    for name, path in summary["files"].items():
        if path:
            table.add_row(name, path)
    console.print(table)
    return summary
