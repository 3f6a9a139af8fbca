"""The bundled CPU model's task family (testbed/tasks.py) as a problem set: held-out
tasks only, never one the model was trained on. Needs the worker extra (the testbed's
tokenizer module imports transformers).

Tasks that can be very hard carry the tag `hard-candidate`: two hidden constants whose
blind-guess space has at least HARD_MIN_SEARCH_SPACE combinations (a blind guesser solves the
others more often than 1 in 36). The toy hard set screens only those."""

from __future__ import annotations

from sdpo.problem_set import ProblemSetEntry

HARD_CANDIDATE = "hard-candidate"
HARD_MIN_SEARCH_SPACE = 36


def toy_problems(count: int, start: int = 0) -> list[ProblemSetEntry]:
    """Held-out tasks start .. start + count - 1, with their reference programs."""
    from testbed.tasks import heldout_task, prompt, reference_code, verifier_spec

    problems = []
    for i in range(start, start + count):
        task = heldout_task(i)
        tags = ["toy", f"hidden-{len(task.hidden)}"]
        if len(task.hidden) == 2 and task.search_space >= HARD_MIN_SEARCH_SPACE:
            tags.append(HARD_CANDIDATE)
        problems.append(
            ProblemSetEntry(
                id=f"toy/heldout-{i}",
                prompt=prompt(task),
                verifier=verifier_spec(task),
                reference_solution=reference_code(task),
                source="sdpo-serve toy task family",
                tags=tags,
            )
        )
    return problems
