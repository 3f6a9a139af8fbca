"""Correct and wrong solutions for each verifier type, through the real sandbox."""

import asyncio
import textwrap

from sandbox import NO_CODE_FEEDBACK, parse_spec

ADD = parse_spec(
    {
        "type": "io_tests",
        "tests": [
            {"input": "1 2\n", "output": "3\n"},
            {"input": "10 20\n", "output": "30"},
            {"input": "-5 5\n", "output": "0"},
        ],
    }
)
TWICE = parse_spec(
    {
        "type": "function_tests",
        "entry_point": "twice",
        "tests": [{"args": [[1, 2]], "expected": [2, 4]}, {"args": [[]], "expected": []}],
    }
)


def judge(sandbox, spec, code):
    return asyncio.run(sandbox.judge(spec, textwrap.dedent(code)))


def test_io_accepted(sandbox):
    result = judge(sandbox, ADD, "a, b = map(int, input().split())\nprint(a + b)\n")
    assert result.passed and result.verdict == "accepted" and result.feedback == ""
    assert [t.verdict for t in result.tests] == ["accepted"] * 3
    assert all(0 < t.time_s < 2 for t in result.tests)


def test_io_wrong_answer(sandbox):
    result = judge(sandbox, ADD, "a, b = map(int, input().split())\nprint(a - b)\n")
    assert result.verdict == "wrong_answer" and not result.passed
    assert result.feedback == (
        "Wrong answer on test 1 of 3.\nInput:\n1 2\nOutput:\n-1\nExpected:\n3\n\n"
        "Wrong answer on test 3 of 3.\nInput:\n-5 5\nOutput:\n-10\nExpected:\n0"
    )


def test_io_runtime_error_feedback(sandbox):
    code = """\
        def parse(line):
            return int(line.split()[2])

        print(parse(input()))
    """
    result = judge(sandbox, ADD, code)
    assert result.verdict == "runtime_error"
    assert result.feedback == (
        "Runtime error on test 1 of 3:\n"
        "Traceback (most recent call last):\n"
        '  File "solution.py", line 4, in <module>\n'
        "    print(parse(input()))\n"
        '  File "solution.py", line 2, in parse\n'
        "    return int(line.split()[2])\n"
        "IndexError: list index out of range\n"
        "Input:\n1 2"
    )


def test_compile_error(sandbox):
    result = judge(sandbox, ADD, "def f(:\n    pass\n")
    assert result.verdict == "compile_error"
    assert result.feedback.startswith('  File "solution.py", line 1')
    assert "SyntaxError" in result.feedback


def test_exit_and_site_builtins(sandbox):
    ok = judge(sandbox, ADD, "a, b = map(int, input().split())\nprint(a + b)\nexit()\n")
    assert ok.passed
    bad = judge(sandbox, ADD, "import sys\nsys.exit(3)\n")
    assert bad.verdict == "runtime_error" and "SystemExit: 3" in bad.feedback


def test_function_and_solution_class(sandbox):
    assert judge(sandbox, TWICE, "def twice(xs):\n    return [2 * x for x in xs]\n").passed
    code = """\
        class Solution:
            def twice(self, xs):
                return tuple(x + x for x in xs)
    """
    assert judge(sandbox, TWICE, code).passed  # tuples compare as lists, as JSON does


def test_function_wrong_answer_feedback(sandbox):
    result = judge(sandbox, TWICE, "def twice(xs):\n    return xs\n")
    assert result.feedback == (
        "Wrong answer on test 1 of 2.\nInput:\ntwice([1, 2])\nOutput:\n[1, 2]\nExpected:\n[2, 4]"
    )


def test_function_missing_entry_point_and_unserialisable(sandbox):
    missing = judge(sandbox, TWICE, "def other(xs):\n    return xs\n")
    assert missing.verdict == "runtime_error" and "no function 'twice'" in missing.feedback
    odd = judge(sandbox, TWICE, "def twice(xs):\n    return {1, 2}\n")
    assert odd.verdict == "wrong_answer" and odd.tests[0].output == "{1, 2}"


def test_float_tolerance(sandbox):
    spec = parse_spec(
        {"type": "function_tests", "entry_point": "f", "tests": [{"args": [], "expected": 0.3}]}
    )
    assert judge(sandbox, spec, "def f():\n    return 0.1 + 0.2\n").passed


def test_checker_program_mode(sandbox):
    checker = textwrap.dedent("""\
        def check(output):
            n = int(output)
            return (n % 7 == 0, f"{n} is not a multiple of 7")
    """)
    spec = parse_spec({"type": "checker", "code": checker, "input": "3\n"})
    assert judge(sandbox, spec, "print(int(input()) * 7)\n").passed
    wrong = judge(sandbox, spec, "print(int(input()) + 1)\n")
    assert wrong.verdict == "wrong_answer"
    assert wrong.feedback == (
        "Wrong answer on test 1 of 1.\nInput:\n3\nOutput:\n4\nChecker: 4 is not a multiple of 7"
    )


def test_checker_answer_mode_judges_raw_text(sandbox):
    spec = parse_spec(
        {"type": "checker", "mode": "answer", "code": "def check(a):\n    return '42' in a\n"}
    )
    assert asyncio.run(sandbox.judge_answer(spec, "The answer is 42.")).passed
    assert not asyncio.run(sandbox.judge_answer(spec, "The answer is 41.")).passed


def test_broken_checker_is_invalid_spec(sandbox):
    spec = parse_spec({"type": "checker", "code": "def check(o):\n    return 1 / 0\n"})
    result = judge(sandbox, spec, "print(1)\n")
    assert result.verdict == "invalid_spec" and not result.passed
    assert result.feedback.startswith("The checker failed: Traceback")
    assert 'File "checker.py", line 2, in check' in result.feedback


def test_answer_without_code_block(sandbox):
    result = asyncio.run(sandbox.judge_answer(ADD, "I think you should add the numbers."))
    assert result.verdict == "compile_error" and result.feedback == NO_CODE_FEEDBACK
    empty = asyncio.run(sandbox.judge_answer(ADD, "```python\n```"))
    assert empty.feedback == NO_CODE_FEEDBACK


def test_answer_extracts_last_block(sandbox):
    answer = (
        "```python\nprint(0)\n```\nFixed:\n```python\nprint(sum(map(int, input().split())))\n```"
    )
    assert asyncio.run(sandbox.judge_answer(ADD, answer)).passed


def test_batch_of_attempts_judged_concurrently(sandbox):
    good = "```python\nprint(sum(map(int, input().split())))\n```"
    bad = "```python\nprint(0)\n```"
    results = asyncio.run(sandbox.judge_many(ADD, [good, bad] * 4))
    assert [r.passed for r in results] == [True, False] * 4


def test_function_tests_have_per_test_verdicts(sandbox):
    spec = parse_spec(
        {
            "type": "function_tests",
            "entry_point": "f",
            "time_limit_s": 0.5,
            "tests": [
                {"args": [1], "expected": 1},
                {"args": [0], "expected": 0},
                {"args": [-1], "expected": 1},
                {"args": [2], "expected": 3},
            ],
        }
    )
    code = """\
        def f(n):
            if n == 0:
                while True:
                    try:
                        pass
                    except Exception:  # a bare `except Exception` cannot swallow the timeout
                        pass
            if n < 0:
                raise ValueError("negative")
            return n
    """
    result = judge(sandbox, spec, code)
    verdicts = [t.verdict for t in result.tests]
    assert verdicts == ["accepted", "time_limit", "runtime_error", "wrong_answer"]
    assert result.verdict == "runtime_error"
    assert result.feedback.startswith("Runtime error on test 3 of 4:\nTraceback")
    assert "ValueError: negative\nInput:\nf(-1)\n\nTime limit exceeded on test 2 of 4" in (
        result.feedback
    )


def test_function_module_level_failure_applies_to_every_test(sandbox):
    result = judge(sandbox, TWICE, "raise RuntimeError('at import')\n")
    assert [t.verdict for t in result.tests] == ["runtime_error", "runtime_error"]
    assert [t.input for t in result.tests] == ["twice([1, 2])", "twice([])"]


def test_answer_picks_the_block_that_defines_the_entry_point(sandbox):
    """A usage block after the solution would fail with a NameError if it were the one run."""
    answer = (
        "```python\ndef twice(xs):\n    return [2 * x for x in xs]\n```\n"
        "Usage:\n```python\nprint(twice([1, 2]))\n```"
    )
    assert asyncio.run(sandbox.judge_answer(TWICE, answer)).passed
