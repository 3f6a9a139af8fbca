"""A verifier's prelude runs before the candidate, in its namespace; feedback still counts the
candidate's own lines and shows only its frames."""

import asyncio
import textwrap

import pytest
from pydantic import ValidationError

from sandbox import parse_spec

PRELUDE = "import math\nfrom typing import List\n\n\ndef helper(x):\n    return x + 1\n"
RAISES = "def area(xs: List[int]) -> float:\n    return math.pi * helper(xs[9])\n"


def judge(sandbox, spec, code):
    return asyncio.run(sandbox.judge(spec, textwrap.dedent(code)))


def _frames(feedback: str) -> list[str]:
    return [line.strip() for line in feedback.splitlines() if line.strip().startswith("File")]


def test_io_tests_prelude_keeps_candidate_line_numbers(sandbox):
    spec = parse_spec(
        {"type": "io_tests", "prelude": PRELUDE, "tests": [{"input": "", "output": "4.14159"}]}
    )
    assert judge(sandbox, spec, "print(round(math.pi + helper(0), 5))\n").passed
    result = judge(sandbox, spec, RAISES + "print(area([1]))\n")
    assert _frames(result.feedback) == [
        'File "solution.py", line 3, in <module>',
        'File "solution.py", line 2, in area',
    ]
    assert "prelude.py" not in result.feedback


def test_function_tests_prelude(sandbox):
    spec = parse_spec(
        {
            "type": "function_tests",
            "entry_point": "area",
            "prelude": PRELUDE,
            "tests": [{"args": [[0]], "expected": 3.14159}],
        }
    )
    assert judge(
        sandbox, spec, "def area(xs):\n    return round(math.pi * helper(xs[0]), 5)\n"
    ).passed
    result = judge(sandbox, spec, RAISES)
    assert result.verdict == "runtime_error"
    assert _frames(result.feedback) == ['File "solution.py", line 2, in area']


def test_unit_tests_prelude_and_candidate_future_import(sandbox):
    spec = parse_spec(
        {
            "type": "unit_tests",
            "entry_point": "area",
            "prelude": PRELUDE,
            "test_code": "def check(candidate):\n    assert candidate([2]) == 3\n",
        }
    )
    good = "from __future__ import annotations\n\ndef area(xs: List[int]) -> int:\n"
    assert judge(sandbox, spec, good + "    return helper(xs[0])\n").passed
    result = judge(sandbox, spec, RAISES)
    assert _frames(result.feedback) == ['File "solution.py", line 2, in area']


def test_checker_program_mode_prelude(sandbox):
    spec = parse_spec(
        {
            "type": "checker",
            "prelude": PRELUDE,
            "code": "def check(output):\n    return output.strip() == '2'\n",
        }
    )
    assert judge(sandbox, spec, "print(helper(1))\n").passed
    with pytest.raises(ValidationError, match="prelude"):
        parse_spec({"type": "checker", "mode": "answer", "prelude": "x = 1", "code": "x"})


def test_a_failing_prelude_is_the_spec_s_fault(sandbox):
    spec = parse_spec(
        {"type": "io_tests", "prelude": "import no_such_module\n", "tests": [{"output": "1"}]}
    )
    result = judge(sandbox, spec, "print(1)\n")
    assert result.verdict == "invalid_spec" and not result.passed
    assert result.feedback.startswith("The prelude failed: Traceback")
    assert "ModuleNotFoundError: No module named 'no_such_module'" in result.feedback
