"""The bundled CPU model's task family (worker/testbed/tasks.py) as a problem set: held-out
tasks only, never one the model was trained on. Needs the worker extra (the testbed's
tokenizer module imports transformers)."""

from __future__ import annotations

from sdpo.problem_set import ProblemSetEntry


def toy_problems(count: int, start: int = 0) -> list[ProblemSetEntry]:
    """Held-out tasks start .. start + count - 1, with their reference programs."""
    from worker.testbed.tasks import heldout_task, prompt, reference_code, verifier_spec

    problems = []
    for i in range(start, start + count):
        task = heldout_task(i)
        problems.append(
            ProblemSetEntry(
                id=f"toy/heldout-{i}",
                prompt=prompt(task),
                verifier=verifier_spec(task),
                reference_solution=reference_code(task),
                source="sdpo-serve toy task family",
                tags=["toy", f"hidden-{len(task.hidden)}"],
            )
        )
    return problems
