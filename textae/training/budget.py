"""Training to a wall-clock budget: measure the step time, plan the step count, say when to stop.

`--time-budget 30m` fixes how long a run trains, not how many steps it takes. After a few warm-up
steps (thread pools, allocator, the first validation's batches) the budget measures seconds per
step and plans the total so that the learning-rate schedule (warm-up, then cosine) ends when the
budget does. It re-plans as it goes, from the mean step time since measuring began (validations
and checkpoints included), so the plan tracks a machine that gets busier or a run whose batches
get slower, and it keeps back the time of one validation for the final one.

Time counts from the start of the training loop (data preparation, tokenizer training and the token
store do not count) and is saved in every checkpoint: a resumed run spends only what was left of
its budget. Time between a kill and the resume does not count, nor do the steps after the last
checkpoint (a killed run redoes them).

The clock is injectable (`clock`), so tests drive a run with a fake clock and are deterministic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

MEASURE_AFTER = 5  # steps of this session skipped before timing starts (warm-up, first allocations)
MEASURE_STEPS = 20  # steps timed before the first plan


class TimeBudget:
    """Seconds of training allowed and spent; the planned total step count.

    Call `observe(step)` once after every optimisation step and `validation_took(seconds)` after
    every validation; `planned_steps` is the step count the schedule should end at (None until
    measured), `exhausted` says the run must stop now.
    """

    def __init__(
        self,
        seconds: float | None,
        spent: float = 0.0,
        *,
        max_steps: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        measure_after: int = MEASURE_AFTER,
        measure_steps: int = MEASURE_STEPS,
    ) -> None:
        self.seconds = seconds  # None: no budget, only the time spent is tracked
        self.max_steps = max_steps
        self.clock = clock
        self.measure_after, self.measure_steps = measure_after, measure_steps
        self._spent_before = spent  # by earlier sessions of this run (from the checkpoint)
        self._started = clock()
        self._now = self._started
        self._session_steps = 0
        self._measured_from: tuple[int, float] | None = None  # (step, spent) where timing began
        self.seconds_per_step: float | None = None
        self.validation_seconds = 0.0  # the longest validation seen: kept back for the final one
        self.planned_steps: int | None = None

    @property
    def spent(self) -> float:
        """Seconds of training so far, this session and earlier ones (as of the last clock reading)."""
        return self._spent_before + (self._now - self._started)

    @property
    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.spent

    def read_clock(self) -> float:
        self._now = self.clock()
        return self.spent

    def observe(self, step: int) -> int | None:
        """After `step` steps in all: read the clock once and re-plan; return the planned total steps."""
        self.read_clock()
        self._session_steps += 1
        if self.seconds is None:
            return None
        if self._measured_from is None and self._session_steps >= self.measure_after:
            self._measured_from = (step, self.spent)
        elif self._measured_from is not None and step - self._measured_from[0] >= self.measure_steps:
            measured_step, measured_spent = self._measured_from
            self.seconds_per_step = (self.spent - measured_spent) / (step - measured_step)
        if self.seconds_per_step is not None:
            self.planned_steps = self.plan(step)
        if self.exhausted:
            self.planned_steps = step
        return self.planned_steps

    def plan(self, step: int) -> int:
        """The step count that uses the rest of the budget at the measured pace, keeping one validation back."""
        assert self.seconds_per_step is not None
        usable = self.left - self.validation_seconds
        more = max(0, math.floor(usable / self.seconds_per_step)) if self.seconds_per_step > 0 else 1 << 40
        total = step + more
        return min(total, self.max_steps) if self.max_steps else total

    @property
    def exhausted(self) -> bool:
        return self.seconds is not None and self.left - self.validation_seconds <= 0

    def validation_took(self, seconds: float) -> None:
        self.validation_seconds = max(self.validation_seconds, seconds)

    def describe(self) -> str:
        if self.seconds is None:
            return "no time budget"
        pace = f"{self.seconds_per_step:.3f} s/step" if self.seconds_per_step else "pace not measured yet"
        return f"time budget {format_seconds(self.seconds)}, {format_seconds(self.spent)} spent, {pace}"


def format_seconds(seconds: float) -> str:
    """1830.0 -> "30m30s"; 42.5 -> "42s"."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs or not (hours or minutes) else ""]
    return "".join(parts)
