"""The session loop: run a strategy step by step until a pass, the budget, or a stop."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from .records import Attempt, StepRecord
from .strategies import StepInterrupted, Strategy

Outcome = Literal["solved", "exhausted", "cancelled"]


@dataclass(frozen=True)
class Budget:
    max_attempts: int
    max_wall_s: float | None = None


@dataclass
class SessionResult:
    outcome: Outcome
    attempts_used: int
    first_success: Attempt | None
    steps: int


async def run_session(
    strategy: Strategy,
    budget: Budget,
    *,
    on_step: Callable[[StepRecord], Awaitable[None]] | None = None,
    should_stop: Callable[[], Awaitable[bool]] | None = None,
    started_at: float | None = None,
) -> SessionResult:
    """Steps until solved or out of budget. Budget and stop requests are checked between steps;
    `on_step` commits each step (and may checkpoint) before the next one starts."""
    started_at = time.time() if started_at is None else started_at
    while True:
        remaining = budget.max_attempts - strategy.attempts_used
        out_of_time = (
            budget.max_wall_s is not None and time.time() - started_at >= budget.max_wall_s
        )
        if remaining <= 0 or out_of_time:
            return SessionResult("exhausted", strategy.attempts_used, None, strategy.step_index)
        if should_stop is not None and await should_stop():
            return SessionResult("cancelled", strategy.attempts_used, None, strategy.step_index)
        try:
            record = await strategy.step(remaining, should_stop)
        except StepInterrupted:
            return SessionResult("cancelled", strategy.attempts_used, None, strategy.step_index)
        if on_step is not None:
            await on_step(record)
        if (success := record.first_success) is not None:
            return SessionResult("solved", strategy.attempts_used, success, strategy.step_index)
