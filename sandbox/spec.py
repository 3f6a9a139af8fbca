"""Verifier specs: what a problem's checker looks like on the wire (DESIGN.md §4).

Three styles, compatible with LiveCodeBench's two test styles plus a user checker. Validation
errors name the offending field, so the gateway can turn them into a 422 as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MAX_TESTS = 1000


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time_limit_s: float = Field(
        2.0, gt=0, le=60, description="CPU-time limit per test, in seconds (wall limit is derived)."
    )
    memory_limit_mb: int = Field(
        256, ge=32, le=8192, description="Address-space limit per test process, in MiB."
    )
    float_tolerance: float = Field(
        1e-6, ge=0, le=1, description="Absolute or relative tolerance when both tokens are numbers."
    )


class IoTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field("", description="Text fed to the program's stdin.")
    output: str = Field(..., description="Expected stdout, compared token by token.")


class IoTestsSpec(_Limits):
    """The program reads stdin and writes stdout (LiveCodeBench "stdin" style)."""

    type: Literal["io_tests"]
    tests: list[IoTest] = Field(..., min_length=1, max_length=MAX_TESTS)


class FunctionTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list, description="Positional arguments, as JSON.")
    expected: Any = Field(..., description="Expected return value, as JSON.")


class FunctionTestsSpec(_Limits):
    """The program defines `entry_point` (or `class Solution` with that method)."""

    type: Literal["function_tests"]
    entry_point: str = Field(
        ..., pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of the function to call."
    )
    tests: list[FunctionTest] = Field(..., min_length=1, max_length=MAX_TESTS)


class CheckerSpec(_Limits):
    """The user's `check(output)` judges the program's stdout, or the raw answer text."""

    type: Literal["checker"]
    code: str = Field(
        ...,
        min_length=1,
        max_length=100_000,
        description="Python source defining check(output: str) -> bool | tuple[bool, str].",
    )
    input: str = Field("", description="stdin for the program (mode 'program').")
    mode: Literal["program", "answer"] = Field(
        "program",
        description="'program': run the code and check its stdout; 'answer': check the raw text.",
    )


VerifierSpec = Annotated[IoTestsSpec | FunctionTestsSpec | CheckerSpec, Field(discriminator="type")]
_spec_adapter: TypeAdapter[VerifierSpec] = TypeAdapter(VerifierSpec)


def parse_spec(data: Any) -> IoTestsSpec | FunctionTestsSpec | CheckerSpec:
    """Validate a spec given as a dict or JSON text; raises pydantic.ValidationError."""
    if isinstance(data, (str, bytes)):
        return _spec_adapter.validate_json(data)
    return _spec_adapter.validate_python(data)
