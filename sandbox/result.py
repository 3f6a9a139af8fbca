"""The judge's verdicts: plain data the worker stores and the teacher reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Verdict = Literal[
    "accepted",
    "wrong_answer",
    "runtime_error",
    "time_limit",
    "memory_limit",
    "output_limit",
    "compile_error",
    "invalid_spec",
]

# Which failure an attempt is reported as when its tests fail differently; also the order in
# which feedback lists them (DESIGN.md §4: errors first, then limits, then wrong answers).
VERDICT_PRIORITY: tuple[Verdict, ...] = (
    "invalid_spec",
    "compile_error",
    "runtime_error",
    "time_limit",
    "memory_limit",
    "output_limit",
    "wrong_answer",
    "accepted",
)


class TestResult(BaseModel):
    """One test of one attempt. `output` is what the program produced (capped)."""

    __test__ = False  # not a pytest class

    index: int
    verdict: Verdict
    time_s: float
    input: str | None = Field(None, description="What the test fed the program; None if nothing.")
    output: str = ""
    expected: str = ""
    error: str = Field("", description="Traceback or limit message, candidate frames only.")


class Judgement(BaseModel):
    """The verdict on one attempt: what `python -m sandbox run` prints as JSON."""

    passed: bool
    verdict: Verdict
    feedback: str = Field(..., description="The text the self-teacher sees; empty when passed.")
    tests: list[TestResult]
    time_s: float
