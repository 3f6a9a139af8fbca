"""`sdpo problems check`: every reference solution of a problem set, judged in the sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from sandbox import Judgement, Sandbox
from sdpo.problem_set import ProblemSetEntry


@dataclass(frozen=True)
class Failure:
    """A problem whose reference solution its own verifier does not accept."""

    id: str
    verdict: str
    feedback: str


@dataclass
class CheckReport:
    checked: int = 0
    without_reference: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


async def check_problem_set(sandbox: Sandbox, entries: Sequence[ProblemSetEntry]) -> CheckReport:
    """Judge every reference solution (as program text, or the raw answer of an answer-mode
    checker), as many at once as the sandbox runs in parallel."""
    report = CheckReport()
    judged = [e for e in entries if e.reference_solution is not None]
    report.without_reference = [e.id for e in entries if e.reference_solution is None]
    # the sandbox bounds processes; this bounds attempt folders waiting for them
    waiting = asyncio.Semaphore(2 * sandbox.settings.max_parallel)

    async def judge(entry: ProblemSetEntry) -> Judgement:
        async with waiting:
            return await sandbox.judge(entry.verifier, entry.reference_solution or "")

    judgements = await asyncio.gather(*(judge(e) for e in judged))
    report.checked = len(judged)
    for entry, judgement in zip(judged, judgements, strict=True):
        if not judgement.passed:
            report.failures.append(Failure(entry.id, judgement.verdict, judgement.feedback))
    return report
