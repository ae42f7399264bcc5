"""The time budget: durations, the step plan from a measured pace, and runs driven by a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.tiny import TINY_MODEL, TINY_TRAIN

from textae.config import ModelConfig, TrainConfig, parse_duration
from textae.errors import TextaeError
from textae.training.budget import TimeBudget, format_seconds
from textae.training.loop import train
from textae.training.metrics import read_metrics


class TickingClock:
    """A clock that moves `tick` seconds every time it is read: a run reads it once per step (and
    around validations and checkpoints), so a step "takes" one tick, deterministically."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", 1800), ("2h", 7200), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), ("1h2m3s", 3723), (" 45S ", 45)],
)
def test_parses_durations(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "m", "30x", "2h-5m", "5m2h", "0m", "-3m", "1 h"])
def test_refuses_malformed_durations(text: str) -> None:
    with pytest.raises(TextaeError, match=r"duration such as 30m|longer than zero"):
        parse_duration(text)


def test_time_budget_is_validated_with_the_config() -> None:
    with pytest.raises(TextaeError, match="time_budget must be a duration"):
        TrainConfig(corpus=["x"], time_budget="half an hour").validate()
    assert TrainConfig(time_budget="1h30m").time_budget_seconds == 5400


def test_formats_seconds() -> None:
    assert [format_seconds(s) for s in (0, 42.4, 90, 1830, 5400, 3723)] == ["0s", "42s", "1m30s", "30m30s", "1h30m", "1h2m3s"]


def test_plans_the_steps_that_fill_the_budget_at_the_measured_pace() -> None:
    clock = TickingClock(2.0)  # 2 s per step
    budget = TimeBudget(100.0, clock=clock, measure_after=2, measure_steps=5)
    plans = [budget.observe(step) for step in range(1, 8)]
    assert plans[:5] == [None] * 5  # warm-up, then timing
    # after 7 steps (14 s spent) the remaining 86 s hold 43 more steps at 2 s each
    assert budget.seconds_per_step == pytest.approx(2.0) and plans[6] == 7 + 43
    budget.validation_took(10.0)  # one validation is kept back for the final one
    assert budget.observe(8) == 8 + 37  # 84 s left, 74 s usable
    for step in range(9, 100):
        if budget.observe(step) == step:
            break
    assert budget.exhausted and step == 45 and budget.spent == 90


def test_a_resumed_budget_counts_earlier_sessions_and_caps_at_max_steps() -> None:
    budget = TimeBudget(100.0, spent=60.0, max_steps=30, clock=TickingClock(1.0), measure_after=1, measure_steps=2)
    plans = [budget.observe(step) for step in range(20, 24)]
    # 40 s left at 1 s a step would be 40 more steps, but max_steps caps the plan
    assert plans[-1] == 30
    assert TimeBudget(10.0, spent=12.0, clock=TickingClock(1.0)).observe(5) == 5  # already spent: stop now


def test_without_a_budget_only_time_is_tracked() -> None:
    budget = TimeBudget(None, spent=5.0, clock=TickingClock(1.0))
    assert [budget.observe(step) for step in range(3)] == [None] * 3
    assert budget.spent == pytest.approx(8.0) and not budget.exhausted


def _budget_config(tmp_path: Path, corpus: Path, name: str, budget: str) -> TrainConfig:
    settings = {**TINY_TRAIN, "eval_every": 25, "checkpoint_every": 5, "log_every": 1, "warmup_steps": 5}
    return TrainConfig(corpus=[str(corpus)], out=str(tmp_path / name), epochs=1, time_budget=budget, **settings)


def test_a_run_ends_its_schedule_at_the_budget(tmp_path: Path, tiny_corpus: Path) -> None:
    config = _budget_config(tmp_path, tiny_corpus, "budget", "60s")
    summary = train(config, ModelConfig(**TINY_MODEL), show_progress=False, clock=TickingClock(1.0))
    assert summary["finished"] and summary["time_budget_seconds"] == 60
    # one epoch of the tiny corpus is 4 steps: a time budget trains past the epoch count
    assert summary["steps"] > 4 * config.epochs
    assert 50 <= summary["train_seconds"] <= 60
    assert summary["total_steps"] == summary["steps"]
    checkpoint = torch.load(tmp_path / "budget" / "checkpoint.pt", weights_only=True)
    # the cosine schedule reached its floor (10 % of the peak) at the last step
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * config.peak_learning_rate, rel=0.02)
    records = read_metrics(tmp_path / "budget")
    assert records[-1]["type"] == "valid" and records[-1]["step"] == summary["steps"]  # a final validation
    assert (tmp_path / "budget" / "best.pt").is_file()
    assert json.loads((tmp_path / "budget" / "summary.json").read_text())["train_seconds"] == summary["train_seconds"]


def test_a_resumed_run_finishes_within_the_budget_it_was_given(tmp_path: Path, tiny_corpus: Path) -> None:
    config = _budget_config(tmp_path, tiny_corpus, "resumed", "60s")
    partial = train(config, ModelConfig(**TINY_MODEL), show_progress=False, clock=TickingClock(1.0), stop_at_step=20)
    assert partial["finished"] is False
    spent = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["training_state"]["train_seconds"]
    assert 20 <= spent < 30
    resumed = train(TrainConfig(out=config.out), resume=True, show_progress=False, clock=TickingClock(1.0))
    assert resumed["finished"] and resumed["steps"] > 20
    assert 50 <= resumed["train_seconds"] <= 60


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_other_optimizers_train_with_their_own_defaults(tmp_path: Path, tiny_corpus: Path, optimizer: str) -> None:
    settings = {**TINY_TRAIN, "learning_rate": None, "max_steps": 60, "eval_every": 60}
    config = TrainConfig(corpus=[str(tiny_corpus)], out=str(tmp_path / optimizer), epochs=100, optimizer=optimizer, **settings)
    summary = train(config, ModelConfig(**TINY_MODEL), show_progress=False)
    state = torch.load(tmp_path / optimizer / "checkpoint.pt", weights_only=True)["optimizer"]
    expected = {"adam": 2e-3, "sgd": 0.3}[optimizer]
    assert summary["optimizer"] == optimizer and summary["peak_learning_rate"] == expected
    if optimizer == "sgd":
        assert state["param_groups"][0]["momentum"] == 0.9 and state["param_groups"][0]["nesterov"]
    train_losses = [r["loss"] for r in read_metrics(tmp_path / optimizer) if r["type"] == "train"]
    assert train_losses[-1] < train_losses[0] * 0.7
