"""Problem sets as the benchmarks take them: the toy task family or any problem-set file.

A hard set and a discovery run name their problems by position in a source, and store the
source's digest, so a file edited after the hard set was chosen is caught (see hardset.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbox import parse_spec
from sdpo.problem_set import ProblemSetEntry, load_problem_set
from worker.prompts import solution_prompt
from worker.strategies import Problem

TOY = "toy"
TOY_SCAN = 600  # held-out toy tasks in the toy source (the hard set scanned all of them)


def fenced(code: str) -> str:
    """A reference solution as an instruction-tuned model writes it."""
    return f"```python\n{code.strip()}\n```"


@dataclass(frozen=True)
class ProblemSource:
    """An ordered list of problems with a digest of their content.

    `answer_text` shows a reference solution to the reference-teacher control in the answer
    format the model itself writes (the toy model has its own; real models write fences)."""

    name: str
    entries: tuple[ProblemSetEntry, ...]
    answer_text: Callable[[str], str] = fenced

    @property
    def digest(self) -> str:
        return problem_set_digest(self.entries)

    def problem(self, index: int, *, with_reference: bool = False) -> Problem:
        """Problem `index` for the strategies; `with_reference` adds the user message that the
        reference-teacher control's teacher sees instead of feedback."""
        entry = self.entries[index]
        reference = None
        if with_reference:
            if entry.reference_solution is None:
                raise ValueError(f"{entry.id} has no reference_solution for the control")
            reference = solution_prompt(entry.prompt, self.answer_text(entry.reference_solution))
        return Problem(entry.prompt, parse_spec(entry.verifier), reference)


def problem_set_digest(entries: tuple[ProblemSetEntry, ...] | list[ProblemSetEntry]) -> str:
    """sha256 over the entries as a problem-set file stores them (order matters)."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.model_dump_json(exclude_unset=True).encode() + b"\n")
    return digest.hexdigest()[:16]


def toy_source(count: int = TOY_SCAN) -> ProblemSource:
    """Held-out toy tasks 0 .. count - 1: position i is held-out task i."""
    from problemsets.toy import toy_problems
    from testbed.tokenizer import answer_text

    return ProblemSource(TOY, tuple(toy_problems(count)), answer_text)


def load_source(spec: str | Path | None) -> ProblemSource:
    """`toy` (or None) for the toy family, otherwise a problem-set file.

    Raises ProblemSetError (naming the file, line and field) and FileNotFoundError."""
    if spec is None or str(spec) == TOY:
        return toy_source()
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"no problem-set file at {path}")
    return ProblemSource(str(path), tuple(load_problem_set(path)))


def heldout_problem(index: int, *, with_reference: bool = False) -> Problem:
    """Held-out toy task `index` (tests and benches of the bundled model use it directly)."""
    from problemsets.toy import toy_problems
    from testbed.tokenizer import answer_text

    source = ProblemSource(TOY, tuple(toy_problems(1, start=index)), answer_text)
    return source.problem(0, with_reference=with_reference)
