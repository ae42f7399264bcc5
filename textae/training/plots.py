"""PNG figures of a run (matplotlib, from the `train` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textae.atomic import atomic_write


def plot_losses(records: list[dict[str, Any]], path: Path) -> None:
    """Training loss (raw and smoothed), validation loss, and free-running exact match against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["type"] == "train"]
    valid = [r for r in records if r["type"] == "valid"]
    fig, loss_axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        steps = [r["step"] for r in train]
        losses = [r["loss"] for r in train]
        loss_axis.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1)
        loss_axis.plot(steps, _smooth(losses), color="tab:blue", label="train loss (mean per record, smoothed)")
    if valid:
        loss_axis.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", color="tab:orange", label="valid loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("cross-entropy per token")
    loss_axis.grid(alpha=0.3)
    if valid:
        match_axis = loss_axis.twinx()
        match_axis.plot(
            [r["step"] for r in valid],
            [r["free_running_exact_match"] for r in valid],
            "s--",
            color="tab:green",
            label="valid exact reconstruction (free running)",
        )
        match_axis.set_ylim(0, 1)
        match_axis.set_ylabel("exact match")
        lines = loss_axis.get_legend_handles_labels()
        more = match_axis.get_legend_handles_labels()
        loss_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    elif train:
        loss_axis.legend(fontsize=8)
    loss_axis.set_title("textae training")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average with bias correction, so the curve does not lag its first points."""
    smoothed, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**count))
    return smoothed
