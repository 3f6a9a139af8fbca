"""Feedback text against exact expected strings."""

from sandbox.feedback import (
    MAX_FEEDBACK_CHARS,
    assertion_text,
    build_feedback,
    build_unit_feedback,
    truncate_input,
    truncate_output,
)
from sandbox.result import TestResult, UnitReport


def _t(index, verdict, input="", output="", expected="", **fields):
    return TestResult(
        index=index, verdict=verdict, time_s=0.0, input=input, output=output,
        expected=expected, **fields,
    )  # fmt: skip


def _feedback(tests):
    return build_feedback(tests, time_limit_s=2, memory_limit_mb=256)


def test_passing_attempt_has_no_feedback():
    assert _feedback([_t(0, "accepted"), _t(1, "accepted")]) == ""


def test_two_shortest_wrong_answers_only():
    tests = [
        _t(0, "wrong_answer", "1 2 3 4\n", "9\n", "10"),
        _t(1, "accepted", "1\n", "1\n", "1"),
        _t(2, "wrong_answer", "5\n", "4\n", "5"),
        _t(3, "wrong_answer", "1 2\n", "2\n", "3"),
    ]
    assert _feedback(tests) == (
        "Wrong answer on test 3 of 4.\nInput:\n5\nOutput:\n4\nExpected:\n5\n\n"
        "Wrong answer on test 4 of 4.\nInput:\n1 2\nOutput:\n2\nExpected:\n3"
    )


def test_runtime_error_comes_first_then_limit_and_hides_wrong_answers():
    trace = (
        "Traceback (most recent call last):\n"
        '  File "solution.py", line 2, in f\n'
        "    return xs[9]\n"
        "IndexError: list index out of range"
    )
    tests = [
        _t(0, "wrong_answer", "1\n", "2\n", "3"),
        _t(1, "time_limit", "100000\n"),
        _t(2, "runtime_error", "7 8\n", error=trace),
    ]
    assert _feedback(tests) == (
        "Runtime error on test 3 of 3:\n" + trace + "\nInput:\n7 8\n\n"
        "Time limit exceeded on test 2 of 3 (limit 2 s).\nInput:\n100000"
    )


def test_memory_limit_and_output_limit_notes():
    assert _feedback([_t(0, "memory_limit", "9\n")]) == (
        "Memory limit exceeded on test 1 of 1 (limit 256 MB).\nInput:\n9"
    )
    assert _feedback([_t(0, "output_limit", "")]) == (
        "Output limit exceeded on test 1 of 1 (too much output).\nInput:\n(empty)"
    )


def test_compile_error_alone():
    error = '  File "solution.py", line 1\n    def f(:\n          ^\nSyntaxError: invalid syntax'
    tests = [_t(0, "compile_error", "1\n", error=error), _t(1, "compile_error", "2\n", error=error)]
    assert _feedback(tests) == error


def test_checker_message_and_missing_input():
    test = TestResult(index=0, verdict="wrong_answer", time_s=0, output="41", error="off by one")
    assert _feedback([test]) == "Wrong answer on test 1 of 1.\nOutput:\n41\nChecker: off by one"


def test_input_truncated_to_8_lines_of_250_chars():
    text = "\n".join(["x" * 300] + [str(i) for i in range(11)]) + "\n"
    assert truncate_input(text) == "\n".join(
        ["x" * 250 + "..."] + [str(i) for i in range(7)] + ["... (4 more lines)"]
    )


def test_output_truncated_to_250_chars():
    assert truncate_output("y" * 251) == "y" * 250 + "..."
    assert truncate_output("short\n\n") == "short"


def test_whole_feedback_capped():
    tests = [_t(0, "runtime_error", "1\n", error="m" * 3000)]
    text = _feedback(tests)
    assert len(text) == MAX_FEEDBACK_CHARS
    assert text.endswith("\n... (truncated)")


def test_assertion_text_for_each_kind():
    compare = UnitReport(kind="compare", values=[("f(1)", "2"), ("3", "3")])
    assert assertion_text(compare) == "The left side was 2, the right side was 3."
    chain = UnitReport(kind="compare", values=[("0", "0"), ("f(1)", "9"), ("5", "5")])
    assert assertion_text(chain) == "The operands were 0, 9, 5."
    value = UnitReport(
        values=[("isclose(f(1), 2.0)", "False")], calls=[("f(1)", "1.5")], message="'close'"
    )
    assert assertion_text(value) == (
        "isclose(f(1), 2.0) was False. Where f(1) returned 1.5.\nAssertion message: 'close'"
    )
    assert UnitReport.parse({"status": "assertion", "test": 5, "values": "x"}) == UnitReport()


def test_unit_feedback_names_the_running_test():
    def unit(verdict, **fields):
        return [_t(0, verdict, input=None, **fields)]

    def feedback(tests):
        return build_unit_feedback(tests, time_limit_s=2, memory_limit_mb=256)

    assert feedback(unit("accepted")) == ""
    assert feedback(unit("memory_limit")) == "Memory limit exceeded (limit 256 MB)."
    wrong = unit("wrong_answer", error="The left side was 1, the right side was 2.")
    wrong[0].input = "assert f(\n    0) == 2"
    assert feedback(wrong) == (
        "Failed assertion:\n    assert f(\n        0) == 2\n"
        "The left side was 1, the right side was 2."
    )
    error = unit("runtime_error", error="ZeroDivisionError: division by zero")
    error[0].input = "assert f(0) == 2"
    assert feedback(error) == (
        "Runtime error:\nZeroDivisionError: division by zero\nTest:\n    assert f(0) == 2"
    )
