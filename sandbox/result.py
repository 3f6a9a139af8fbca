"""The judge's verdicts: plain data the worker stores and the teacher reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, ValidationError

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
# which feedback lists them (errors first, then limits, then wrong answers).
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


# A judgement travels to the store, the API and `python -m sandbox run`: it keeps only this
# much of what a program printed (feedback shows at most 250 characters of it).
MAX_EXCERPT_CHARS = 1000


class TestResult(BaseModel):
    """One test of one attempt. `output` is what the program produced (an excerpt)."""

    __test__ = False  # not a pytest class

    index: int
    verdict: Verdict
    time_s: float
    input: str | None = Field(
        None,
        description="What the test fed the program (or the unit test that ran); None if nothing.",
    )
    output: str = ""
    expected: str = ""
    error: str = Field("", description="Traceback or limit message, candidate frames only.")
    truncated: bool = Field(
        False,
        description=f"output or error was cut to its first {MAX_EXCERPT_CHARS} characters "
        "(the verdict was decided on all of it).",
    )

    def excerpt(self) -> TestResult:
        """This result with `output` and `error` cut to MAX_EXCERPT_CHARS."""
        cut = {
            name: getattr(self, name)[:MAX_EXCERPT_CHARS]
            for name in ("output", "error")
            if len(getattr(self, name)) > MAX_EXCERPT_CHARS
        }
        return self.model_copy(update={**cut, "truncated": True}) if cut else self


class Judgement(BaseModel):
    """The verdict on one attempt: what `python -m sandbox run` prints as JSON."""

    passed: bool
    verdict: Verdict
    feedback: str = Field(..., description="The text the self-teacher sees; empty when passed.")
    tests: list[TestResult]
    time_s: float


class UnitReport(BaseModel):
    """The parts of the harness's unit-mode report that feedback shows. The report comes from
    the candidate's process, so it is validated, never trusted: anything malformed is dropped."""

    test: str | None = Field(None, description="Source of the test that was running.")
    kind: Literal["compare", "not", "value"] = Field(
        "value", description="What the failing assert tested: a comparison, a `not`, a value."
    )
    values: list[tuple[str, str]] = Field(
        default_factory=list, description="(source, repr) of each side or operand evaluated."
    )
    calls: list[tuple[str, str]] = Field(
        default_factory=list, description="(source, repr) of each call to the candidate in it."
    )
    message: str = Field("", description="The assert's own message, if it has one.")

    @classmethod
    def parse(cls, report: dict) -> UnitReport:
        try:
            return cls.model_validate(report)
        except ValidationError:
            return cls()
