"""The toy task family as a problem set: held-out tasks whose reference programs pass."""

import asyncio

import pytest

from problemsets.check import check_problem_set

pytest.importorskip("tokenizers", reason="the toy testbed needs the worker extra")


def test_held_out_tasks_with_passing_references(sandbox):
    from problemsets.toy import toy_problems
    from testbed.tasks import heldout_task, prompt

    problems = toy_problems(4, start=10)
    assert [p.id for p in problems] == [f"toy/heldout-{i}" for i in range(10, 14)]
    assert problems[0].prompt == prompt(heldout_task(10))
    assert {p.verifier.type for p in problems} == {"function_tests"}
    report = asyncio.run(check_problem_set(sandbox, problems))
    assert report.checked == 4 and report.failures == []
