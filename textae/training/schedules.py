"""Schedules over optimisation steps: teacher forcing (Bengio et al. 2015) and learning rate."""

from __future__ import annotations

import math

from textae.config import TEACHER_FORCING_SCHEDULES


def teacher_forcing_ratio(schedule: str, step: int, start: float, end: float, decay_steps: int) -> float:
    """Probability of feeding the gold token at this step, moving from start to end over decay_steps.

    constant: always start. linear: a straight line. exponential: geometric decay (k^step in Bengio
    et al.), 99 % of the way at decay_steps. inverse_sigmoid: k/(k + exp(step/k)) in Bengio et al.,
    here a logistic curve centred at decay_steps / 2 so it reaches end at decay_steps.
    """
    if schedule not in TEACHER_FORCING_SCHEDULES:
        raise ValueError(f"unknown teacher forcing schedule {schedule!r}")
    progress = min(max(step / max(decay_steps, 1), 0.0), 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        weight = 1.0 - progress
    elif schedule == "exponential":
        weight = 0.01**progress
    else:  # inverse_sigmoid
        weight = 1.0 / (1.0 + math.exp(12.0 * (progress - 0.5)))
    return end + (start - end) * weight


def learning_rate_factor(schedule: str, step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate: linear warm-up, then cosine to 10 % or constant."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
