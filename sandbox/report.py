"""The harness's report, checked on the host before the judge reads it.

It comes out of the candidate's process, which can write to the report channel itself, so its
shape is validated here: a report with a field of the wrong type is dropped (the run then
counts as one that did not report) instead of breaking the judge. A well-formed forgery gains
nothing in io and function tests, where the host compares outputs itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Report(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ErrorReport(_Report):
    type: str = "Error"
    message: str = ""
    frames: list[tuple[str, int, str, str]] = Field(default_factory=list)
    text: str | None = None  # a compile error, formatted in the sandbox


class CallReport(_Report):
    """One call of function mode."""

    status: str = ""
    cpu_s: float = 0.0
    json_text: str | None = Field(None, alias="json")
    repr_text: str | None = Field(None, alias="repr")
    code: str | None = None
    error: ErrorReport | None = None


class HarnessReport(CallReport):
    results: list[CallReport] | None = None


def parse_report(data: Any) -> dict:
    """The report as the judge reads it (a dict), or {} when it is malformed."""
    try:
        return HarnessReport.model_validate(data).model_dump(by_alias=True, exclude_none=True)
    except ValidationError:
        return {}
