"""LiveCodeBench rows written here (stdin and functional, private tests compressed and pickled
as LiveCodeBench ships them) import to verifiers that pass good solutions and fail bad ones; a
pickle that carries a global is refused before it can run anything."""

import asyncio
import base64
import json
import os
import pickle
import zlib

import pytest

from problemsets.livecodebench import (
    LiveCodeBenchError,
    decode_private,
    livecodebench_problems,
)


def pack(value) -> str:
    """LiveCodeBench's encoding: base64(zlib(pickle(...)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(value))).decode()


def lcb_tests(kind: str, *pairs) -> list[dict]:
    return [{"input": i, "output": o, "testtype": kind} for i, o in pairs]


STDIN_ROW = {
    "question_id": "abc001_a",
    "question_content": "Read two integers A and B and print A + B.",
    "starter_code": "",
    "platform": "atcoder",
    "difficulty": "easy",
    "public_test_cases": json.dumps(lcb_tests("stdin", ("1 2\n", "3\n"))),
    "private_test_cases": pack(json.dumps(lcb_tests("stdin", ("10 20\n", "30\n")))),
    "metadata": "{}",
}
STARTER = (
    "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        "
)
FUNCTIONAL_ROW = {
    "question_id": "1",
    "question_content": "Return the indices of the two numbers that add up to target.",
    "starter_code": STARTER,
    "platform": "leetcode",
    "difficulty": "easy",
    "public_test_cases": json.dumps(lcb_tests("functional", ("[2, 7, 11, 15]\n9", "[0, 1]"))),
    "private_test_cases": pack(json.dumps(lcb_tests("functional", ("[3, 2, 4]\n6", "[1, 2]")))),
    "metadata": json.dumps({"func_name": "twoSum"}),
}
PLAIN_JSON_ROW = {
    **FUNCTIONAL_ROW,
    "question_id": "2",
    "private_test_cases": json.dumps(lcb_tests("functional", ("[1, 5, 5]\n10", "[1, 2]"))),
}

TWO_SUM = """\
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""


class Payload:
    """What a hostile file could pickle: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_rows(tmp_path, *rows):
    path = tmp_path / "lcb.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def imported(tmp_path):
    result = livecodebench_problems(write_rows(tmp_path, STDIN_ROW, FUNCTIONAL_ROW, PLAIN_JSON_ROW))
    assert result.skipped == []
    return {p.id: p for p in result.problems}


def judge(sandbox, problem, code):
    return asyncio.run(sandbox.judge(problem.verifier, code))


def test_stdin_rows_become_io_tests_with_their_private_tests(sandbox, imported):
    problem = imported["livecodebench/abc001_a"]
    assert problem.verifier.type == "io_tests" and len(problem.verifier.tests) == 2
    assert problem.tags == ["livecodebench", "atcoder", "easy"]
    assert "### Format: Read the inputs from stdin solve the problem" in problem.prompt
    assert judge(sandbox, problem, "a, b = map(int, input().split())\nprint(a + b)\n").passed
    only_public = judge(sandbox, problem, "print(3)\n")  # right on the public test only
    assert only_public.verdict == "wrong_answer"
    assert "Input:\n10 20\nOutput:\n3\nExpected:\n30" in only_public.feedback


def test_functional_rows_become_function_tests(sandbox, imported):
    problem = imported["livecodebench/1"]
    spec = problem.verifier
    assert spec.type == "function_tests" and spec.entry_point == "twoSum"
    assert [(t.args, t.expected) for t in spec.tests] == [
        ([[2, 7, 11, 15], 9], [0, 1]),
        ([[3, 2, 4], 6], [1, 2]),
    ]
    assert "### Format: You will use the following starter code to write the solution to " in (
        problem.prompt
    )
    assert f"```python\n{STARTER}\n```\n\n### Answer: (use the provided format" in problem.prompt
    assert judge(sandbox, problem, TWO_SUM).passed  # `List` comes from the prelude
    bad = "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]\n"
    result = judge(sandbox, problem, bad)
    assert result.verdict == "wrong_answer"
    assert "Input:\ntwoSum([3, 2, 4], 6)\nOutput:\n[0, 1]\nExpected:\n[1, 2]" in result.feedback


def test_plain_json_private_tests(sandbox, imported):
    problem = imported["livecodebench/2"]
    assert [t.args for t in problem.verifier.tests] == [[[2, 7, 11, 15], 9], [[1, 5, 5], 10]]
    assert judge(sandbox, problem, TWO_SUM).passed


def test_a_pickled_global_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    hostile = {**STDIN_ROW, "question_id": "evil", "private_test_cases": pack(Payload(marker))}
    result = livecodebench_problems(write_rows(tmp_path, hostile, STDIN_ROW))
    assert [p.id for p in result.problems] == ["livecodebench/abc001_a"]
    assert len(result.skipped) == 1
    assert result.skipped[0].startswith("line 1: private_test_cases: refused global")
    assert "system" in result.skipped[0]
    with pytest.raises(LiveCodeBenchError, match="refused global"):
        decode_private(pack(Payload(marker)))
    assert not marker.exists()


def test_only_a_str_may_come_out_of_the_pickle():
    with pytest.raises(LiveCodeBenchError, match="a list, not a str"):
        decode_private(pack([{"input": "1", "output": "1", "testtype": "stdin"}]))
    with pytest.raises(LiveCodeBenchError, match="private_test_cases"):
        decode_private("not base64 !!")


def test_rows_that_do_not_convert_are_listed(tmp_path):
    no_name = {**FUNCTIONAL_ROW, "metadata": "{}"}
    mixed = {
        **STDIN_ROW,
        "private_test_cases": pack(json.dumps(lcb_tests("functional", ("1", "1")))),
    }
    result = livecodebench_problems(write_rows(tmp_path, no_name, mixed, {"question_id": "x"}))
    assert result.problems == []
    assert result.skipped == [
        "line 1: a functional problem without metadata.func_name",
        "line 2: test types ['functional', 'stdin'], not stdin or functional",
        "line 3: missing 'question_content'",
    ]
