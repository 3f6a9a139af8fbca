"""The unit_tests verifier through the real sandbox: assert-based tests, with the values of a
failing assertion evaluated inside the sandbox, once, as pytest's assertion rewriting shows them."""

import asyncio
import textwrap

from sandbox import Sandbox, SandboxSettings, parse_spec

CHECK = """\
def check(candidate):
    assert candidate([1, 2, 3]) == 6
    assert candidate([]) == 0
    assert abs(candidate([0.5]) - 0.5) < 1e-6
"""


def unit(test_code=CHECK, entry_point="total", **fields):
    return parse_spec(
        {"type": "unit_tests", "entry_point": entry_point, "test_code": test_code, **fields}
    )


def judge(sandbox, spec, code):
    return asyncio.run(sandbox.judge(spec, textwrap.dedent(code)))


def test_passing_solution(sandbox):
    result = judge(sandbox, unit(), "def total(xs):\n    return sum(xs)\n")
    assert result.passed and result.verdict == "accepted" and result.feedback == ""
    assert len(result.tests) == 1 and result.tests[0].verdict == "accepted"


def test_failed_assertion_shows_its_line_and_both_sides(sandbox):
    result = judge(sandbox, unit(), "def total(xs):\n    return sum(xs) - 1\n")
    assert result.verdict == "wrong_answer" and not result.passed
    assert result.feedback == (
        "Failed assertion:\n"
        "    assert candidate([1, 2, 3]) == 6\n"
        "The left side was 5, the right side was 6."
    )


def test_calls_to_the_candidate_inside_an_expression_are_shown(sandbox):
    code = "def total(xs):\n    return int(sum(xs)) if xs else 0\n"
    assert judge(sandbox, unit(), code).feedback == (
        "Failed assertion:\n"
        "    assert abs(candidate([0.5]) - 0.5) < 1e-6\n"
        "The left side was 0.5, the right side was 1e-06. Where candidate([0.5]) returned 0."
    )


def test_top_level_asserts_by_name_not_and_plain_values(sandbox):
    spec = unit("assert f(2) == 4\nassert not candidate(0)\nassert candidate(3) in (9, 10)\n", "f")
    assert judge(sandbox, spec, "def f(x):\n    return x * x\n").passed
    assert judge(sandbox, spec, "def f(x):\n    return x + 2\n").feedback == (
        "Failed assertion:\n    assert not candidate(0)\ncandidate(0) was 2."
    )
    plain = unit("assert candidate('abc'), 'must be truthy'\n", "f")
    assert judge(sandbox, plain, "def f(s):\n    return ''\n").feedback == (
        "Failed assertion:\n    assert candidate('abc'), 'must be truthy'\n"
        "candidate('abc') was ''.\nAssertion message: 'must be truthy'"
    )


def test_each_side_is_evaluated_once_inside_the_sandbox(sandbox):
    code = """\
        import socket

        calls = []

        class Shown:
            def __repr__(self):
                return f"call {len(calls)} on host {socket.gethostname()}"

        def total(xs):
            calls.append(xs)
            return Shown()
    """
    result = judge(sandbox, unit("assert candidate([1]) == 1\n"), code)
    assert result.feedback.endswith(
        "The left side was call 1 on host sandbox, the right side was 1."
    )


def test_runtime_error_points_into_the_candidate_and_names_the_test(sandbox):
    code = """\
        def helper(xs):
            return xs[5]

        def total(xs):
            return helper(xs)
    """
    result = judge(sandbox, unit(), code)
    assert result.verdict == "runtime_error"
    assert result.feedback == (
        "Runtime error:\n"
        "Traceback (most recent call last):\n"
        '  File "solution.py", line 5, in total\n'
        "    return helper(xs)\n"
        '  File "solution.py", line 2, in helper\n'
        "    return xs[5]\n"
        "IndexError: list index out of range\n"
        "Test:\n"
        "    assert candidate([1, 2, 3]) == 6"
    )


def test_an_error_in_the_test_line_shows_what_the_candidate_returned(sandbox):
    result = judge(sandbox, unit("assert len(candidate([1])) == 1\n"), "def total(xs):\n    pass\n")
    assert result.verdict == "runtime_error"
    assert result.feedback == (
        "Runtime error:\n"
        "TypeError: object of type 'NoneType' has no len()\n"
        "Where candidate([1]) returned None.\n"
        "Test:\n"
        "    assert len(candidate([1])) == 1"
    )


def test_an_assert_of_the_candidate_is_its_runtime_error(sandbox):
    code = "def total(xs):\n    assert xs, 'empty'\n    return sum(xs)\n"
    result = judge(sandbox, unit(), code)
    assert result.verdict == "runtime_error"
    assert 'File "solution.py", line 2, in total' in result.feedback
    assert "AssertionError: empty" in result.feedback
    assert result.feedback.endswith("Test:\n    assert candidate([]) == 0")


def test_time_budget_covers_the_whole_attempt():
    """The CPU budget ends the attempt, and names the test (a generous wall limit, so that a
    loaded machine cannot end it first)."""
    sandbox = Sandbox(SandboxSettings(max_parallel=1, wall_factor=20))
    code = """\
        def total(xs):
            while True:
                try:
                    pass
                except Exception:
                    pass
    """
    result = judge(sandbox, unit(time_limit_s=0.5), code)
    assert result.verdict == "time_limit"
    assert result.feedback == (
        "Time limit exceeded (limit 0.5 s).\nTest:\n    assert candidate([1, 2, 3]) == 6"
    )


def test_exiting_early_is_not_a_pass(sandbox):
    for exit_call in ("import os; os._exit(0)", "import sys; sys.exit(0)"):
        result = judge(sandbox, unit(), f"def total(xs):\n    {exit_call}\n")
        assert result.verdict == "runtime_error", exit_call


def test_a_malformed_report_cannot_break_the_judge(sandbox):
    code = """\
        import os, sys
        os.write(int(sys.argv[1]), b'{"status": "assertion", "test": 5, "values": "x"}')
        os._exit(0)
    """
    result = judge(sandbox, unit(), code)
    assert result.verdict == "wrong_answer" and result.tests[0].input is None


def test_missing_entry_point_and_compile_error(sandbox):
    missing = judge(sandbox, unit(), "def other(xs):\n    return 0\n")
    assert missing.verdict == "runtime_error"
    assert "no function 'total'" in missing.feedback
    broken = judge(sandbox, unit(), "def total(xs)\n    return 0\n")
    assert broken.verdict == "compile_error"
    assert broken.feedback.startswith('  File "solution.py", line 1')


def test_a_check_of_the_candidate_is_not_taken_for_the_tests(sandbox):
    code = "def check(x):\n    return True\n\ndef total(xs):\n    return sum(xs) + check(xs)\n"
    assert judge(sandbox, unit("assert candidate([]) == 1\n"), code).passed
    assert not judge(sandbox, unit(), code).passed


def test_solution_class_method_is_the_candidate(sandbox):
    code = "class Solution:\n    def total(self, xs):\n        return sum(xs)\n"
    assert judge(sandbox, unit(), code).passed


def test_broken_test_code_is_an_invalid_spec(sandbox):
    result = judge(sandbox, unit("def check(candidate)\n    assert True\n"), "def total(xs): 0\n")
    assert result.verdict == "invalid_spec" and not result.passed
    assert result.feedback.startswith("The test code failed: SyntaxError")


def test_the_tests_are_not_a_file_the_candidate_can_read(sandbox):
    code = """\
        import os
        FILES = sorted(os.listdir("/sandbox"))

        def total(xs):
            return FILES
    """
    result = judge(sandbox, unit("assert candidate([]) == 0\n"), code)
    assert "tests.py" not in result.feedback and "solution.py" in result.feedback
