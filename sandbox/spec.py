"""Verifier specs: what a problem's checker looks like on the wire.

Four styles: LiveCodeBench's two (stdin/stdout programs and functions called with arguments),
HumanEval/MBPP-style assert tests, and a user checker. Every code verifier takes a `prelude` run
before the candidate's code, in the same namespace. Validation errors name the offending field,
so the gateway can turn them into a 422 as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

MAX_TESTS = 1000
MAX_CODE_CHARS = 100_000
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


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


class _CodeSpec(_Limits):
    prelude: str = Field(
        "",
        max_length=MAX_CODE_CHARS,
        description="Python run before the candidate's code, in its namespace (imports, helpers). "
        "Line numbers in feedback still count the candidate's own lines.",
    )


class IoTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field("", description="Text fed to the program's stdin.")
    output: str = Field(..., description="Expected stdout, compared token by token.")


class IoTestsSpec(_CodeSpec):
    """The program reads stdin and writes stdout (LiveCodeBench "stdin" style)."""

    type: Literal["io_tests"]
    tests: list[IoTest] = Field(..., min_length=1, max_length=MAX_TESTS)


class FunctionTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list, description="Positional arguments, as JSON.")
    expected: Any = Field(..., description="Expected return value, as JSON.")


class FunctionTestsSpec(_CodeSpec):
    """The program defines `entry_point` (or `class Solution` with that method)."""

    type: Literal["function_tests"]
    entry_point: str = Field(..., pattern=IDENTIFIER, description="Name of the function to call.")
    tests: list[FunctionTest] = Field(..., min_length=1, max_length=MAX_TESTS)


class UnitTestsSpec(_CodeSpec):
    """Assert-based tests (HumanEval, MBPP) run against the candidate's `entry_point`, in its
    process: a hostile candidate could subvert them, which io and function tests prevent."""

    type: Literal["unit_tests"]
    entry_point: str = Field(
        ...,
        pattern=IDENTIFIER,
        description="The function under test (or a method of `class Solution`); the tests call "
        "it as `candidate` or by this name.",
    )
    test_code: str = Field(
        ...,
        min_length=1,
        max_length=MAX_CODE_CHARS,
        description="Python with a `check(candidate)` function, or top-level asserts.",
    )
    time_limit_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="CPU seconds for the whole attempt: the candidate's code and every test.",
    )


class CheckerSpec(_CodeSpec):
    """The user's `check(output)` judges the program's stdout, or the raw answer text."""

    type: Literal["checker"]
    code: str = Field(
        ...,
        min_length=1,
        max_length=MAX_CODE_CHARS,
        description="Python source defining check(output: str) -> bool | tuple[bool, str].",
    )
    input: str = Field("", description="stdin for the program (mode 'program').")
    mode: Literal["program", "answer"] = Field(
        "program",
        description="'program': run the code and check its stdout; 'answer': check the raw text.",
    )

    @model_validator(mode="after")
    def _prelude_needs_a_program(self) -> CheckerSpec:
        if self.prelude and self.mode == "answer":
            raise ValueError("prelude: only a program has a prelude (mode 'program')")
        return self


Spec = IoTestsSpec | FunctionTestsSpec | UnitTestsSpec | CheckerSpec
VerifierSpec = Annotated[Spec, Field(discriminator="type")]
_spec_adapter: TypeAdapter[VerifierSpec] = TypeAdapter(VerifierSpec)


def parse_spec(data: Any) -> Spec:
    """Validate a spec given as a dict or JSON text; raises pydantic.ValidationError."""
    if isinstance(data, (str, bytes)):
        return _spec_adapter.validate_json(data)
    return _spec_adapter.validate_python(data)
