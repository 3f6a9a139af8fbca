"""The feedback text the self-teacher sees.

Only failing tests. A compile error alone; otherwise a runtime error first (traceback frames in
the candidate's code, then the input), then a resource limit; only when neither occurred, up to
two wrong answers, shortest input first, as Input / Output / Expected. Every piece is truncated
so that one huge test cannot crowd the rest of the teacher's context out.

Assert-based tests (unit_tests) run as one process, so their feedback names the one failure:
the runtime error or limit, or the failed assertion with the values of its parts, and then the
test that was running.
"""

from __future__ import annotations

from .result import TestResult, UnitReport

MAX_INPUT_LINES = 8
MAX_LINE_CHARS = 250
MAX_OUTPUT_CHARS = 250
MAX_FEEDBACK_CHARS = 2000
MAX_WRONG_ANSWERS = 2
_TRUNCATED = "\n... (truncated)"

_LIMIT_TITLES = {
    "time_limit": "Time limit exceeded",
    "memory_limit": "Memory limit exceeded",
    "output_limit": "Output limit exceeded",
}


def truncate_input(text: str) -> str:
    lines = text.rstrip("\n").split("\n")
    shown = [
        line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "..."
        for line in lines[:MAX_INPUT_LINES]
    ]
    if len(lines) > MAX_INPUT_LINES:
        shown.append(f"... ({len(lines) - MAX_INPUT_LINES} more lines)")
    return "\n".join(shown)


def truncate_output(text: str) -> str:
    text = text.rstrip()
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + "..."


def _input_block(test: TestResult) -> str:
    if test.input is None:
        return ""
    return "\nInput:\n" + (truncate_input(test.input) if test.input.strip() else "(empty)")


def _where(test: TestResult, n_tests: int) -> str:
    return f"test {test.index + 1} of {n_tests}"


def _runtime_error(test: TestResult, n_tests: int) -> str:
    return f"Runtime error on {_where(test, n_tests)}:\n{test.error.rstrip()}" + _input_block(test)


def _limit(test: TestResult, n_tests: int, limit_note: str) -> str:
    title = _LIMIT_TITLES[test.verdict]
    return f"{title} on {_where(test, n_tests)} ({limit_note})." + _input_block(test)


def _wrong_answer(test: TestResult, n_tests: int) -> str:
    text = f"Wrong answer on {_where(test, n_tests)}." + _input_block(test)
    text += "\nOutput:\n" + (truncate_output(test.output) or "(empty)")
    if test.expected:
        text += "\nExpected:\n" + truncate_output(test.expected)
    if test.error:
        text += "\nChecker: " + truncate_output(test.error)
    return text


def _input_size(test: TestResult) -> tuple[int, int]:
    return (len(test.input or ""), test.index)


def limit_note(verdict: str, time_limit_s: float, memory_limit_mb: int) -> str:
    if verdict == "time_limit":
        return f"limit {time_limit_s:g} s"
    if verdict == "memory_limit":
        return f"limit {memory_limit_mb} MB"
    return "too much output"


def build_feedback(tests: list[TestResult], *, time_limit_s: float, memory_limit_mb: int) -> str:
    """Feedback for a failed attempt; empty when every test passed."""
    n = len(tests)
    failing = sorted((t for t in tests if t.verdict != "accepted"), key=_input_size)
    by_verdict = {v: [t for t in failing if t.verdict == v] for v in {t.verdict for t in failing}}
    if "compile_error" in by_verdict:
        return clip(by_verdict["compile_error"][0].error.rstrip())
    sections = []
    if "runtime_error" in by_verdict:
        sections.append(_runtime_error(by_verdict["runtime_error"][0], n))
    for verdict in _LIMIT_TITLES:
        if verdict in by_verdict:
            note = limit_note(verdict, time_limit_s, memory_limit_mb)
            sections.append(_limit(by_verdict[verdict][0], n, note))
            break
    if not sections:
        wrong = by_verdict.get("wrong_answer", [])[:MAX_WRONG_ANSWERS]
        sections = [_wrong_answer(t, n) for t in wrong]
    return clip("\n\n".join(sections))


def clip(text: str) -> str:
    if len(text) <= MAX_FEEDBACK_CHARS:
        return text
    return text[: MAX_FEEDBACK_CHARS - len(_TRUNCATED)] + _TRUNCATED


def assertion_text(failed: UnitReport) -> str:
    """What a failed assertion saw: the values of both sides of a comparison (every operand of
    a chain), of the operand of `not`, or of the whole test, and what the calls to the
    candidate inside it returned."""
    values = failed.values
    if failed.kind == "compare" and len(values) == 2:
        text = f"The left side was {values[0][1]}, the right side was {values[1][1]}."
    elif failed.kind == "compare":
        text = "The operands were " + ", ".join(v for _, v in values) + "."
    else:
        text = "".join(f"{source} was {value}." for source, value in values[:1])
    shown = {source for source, _ in values}
    calls = [call for call in failed.calls if call[0] not in shown]
    if calls:
        text += " " + returned_text(calls)
    if failed.message:
        text += f"\nAssertion message: {failed.message}"
    return text


def returned_text(calls: list[tuple[str, str]]) -> str:
    """What the candidate's calls in a test returned: "Where f(1) returned 2; f(2) returned 3."."""
    return "Where " + "; ".join(f"{source} returned {value}" for source, value in calls) + "."


def _test_block(test: TestResult) -> str:
    return f"\nTest:\n    {test.input}" if test.input else ""


def build_unit_feedback(
    tests: list[TestResult], *, time_limit_s: float, memory_limit_mb: int
) -> str:
    """Feedback of assert-based tests (one result per attempt); empty when they passed."""
    test = tests[0]
    if test.verdict == "accepted":
        return ""
    if test.verdict == "compile_error":
        return clip(test.error.rstrip())
    if test.verdict == "runtime_error":
        return clip(f"Runtime error:\n{test.error.rstrip()}" + _test_block(test))
    if test.verdict in _LIMIT_TITLES:
        note = limit_note(test.verdict, time_limit_s, memory_limit_mb)
        return clip(f"{_LIMIT_TITLES[test.verdict]} ({note})." + _test_block(test))
    source = "\n".join("    " + line for line in (test.input or "").splitlines())
    return clip(f"Failed assertion:\n{source}\n{test.error}")
