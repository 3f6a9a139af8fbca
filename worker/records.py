"""Typed hand-offs between the phases of the loop (generation → judging → update)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox import Judgement

PHASES = ("generate", "judge", "teacher", "train", "sync")


@dataclass
class Attempt:
    """One sampled answer and its verdict. `index` counts attempts from 1 within a session."""

    index: int
    step: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    judgement: Judgement | None = None

    @property
    def passed(self) -> bool:
        return self.judgement is not None and self.judgement.passed


@dataclass
class StepRecord:
    """Everything one step produced: attempts, phase seconds and update metrics."""

    step: int
    attempts: list[Attempt]
    phase_s: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def pass_count(self) -> int:
        return sum(a.passed for a in self.attempts)

    @property
    def first_success(self) -> Attempt | None:
        return next((a for a in self.attempts if a.passed), None)
