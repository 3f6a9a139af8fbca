"""Judging one attempt against a verifier spec: run every test in the sandbox, then decide.

The `Sandbox` object is the Python API the worker uses. It is async so that judging a batch of
attempts never blocks the worker's event loop, and one semaphore bounds the test processes that
run at once across all attempts being judged.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .compare import tokens_match, values_match
from .extract import NO_CODE_FEEDBACK, extract_code
from .feedback import assertion_text, build_feedback, build_unit_feedback, returned_text
from .isolation import (
    DIR_PREFIX,
    HarnessRun,
    Isolator,
    ProcessOutcome,
    TestLimits,
    helper_source,
    sweep_stale_dirs,
    write_files,
)
from .result import VERDICT_PRIORITY, Judgement, TestResult, UnitReport, Verdict
from .settings import SandboxSettings, get_settings
from .spec import CheckerSpec, FunctionTestsSpec, IoTestsSpec, Spec, UnitTestsSpec


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the candidate): e.g. bwrap could not set up namespaces."""


class Sandbox:
    """Judges candidate programs in isolated processes; see `isolation` for what that means."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or get_settings()
        self._isolator = Isolator(self.settings)  # refuses here, before any code runs
        sweep_stale_dirs()
        self.mode = self._isolator.mode
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    async def judge_answer(self, spec: Spec, answer: str) -> Judgement:
        """Judge a model's raw answer: extract the code first (the checker's answer mode
        judges the raw text itself). A spec that names an entry point picks the block that
        defines it; specs without one have no such attribute."""
        if isinstance(spec, CheckerSpec) and spec.mode == "answer":
            return await self.judge(spec, answer)
        code, fenced = extract_code(answer, entry_point=getattr(spec, "entry_point", None))
        judgement = await self.judge(spec, code)
        if (not fenced and judgement.verdict == "compile_error") or not code.strip():
            judgement.verdict, judgement.passed = "compile_error", False
            judgement.feedback = NO_CODE_FEEDBACK
        return judgement

    async def judge_many(self, spec: Spec, answers: Sequence[str]) -> list[Judgement]:
        """Judge a batch of raw answers concurrently (bounded by `max_parallel` processes)."""
        return list(await asyncio.gather(*(self.judge_answer(spec, a) for a in answers)))

    def judge_sync(self, spec: Spec, code: str) -> Judgement:
        return asyncio.run(self.judge(spec, code))

    async def judge(self, spec: Spec, code: str) -> Judgement:
        """Judge program text as is (no extraction)."""
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"{DIR_PREFIX}{os.getpid()}-") as tmp:
            write_files(Path(tmp), _files(spec, code))
            if isinstance(spec, IoTestsSpec):
                tests = await self._io_tests(spec, tmp)
            elif isinstance(spec, FunctionTestsSpec):
                tests = await self._function_tests(spec, tmp)
            elif isinstance(spec, UnitTestsSpec):
                tests = [await self._unit_tests(spec, tmp)]
            else:
                tests = [await self._checker_test(spec, tmp, code)]
        return _judgement(spec, tests, time.perf_counter() - started)

    async def _run(
        self, harness_mode: str, files_dir: str, stdin: str, limits: TestLimits, entry=""
    ):
        data = stdin.encode("utf-8", errors="replace")
        async with self._semaphore():
            outcome = await self._isolator.run(
                HarnessRun(harness_mode, files_dir, data, limits, entry_point=entry)
            )
        if not outcome.report and outcome.stderr.startswith(b"bwrap:"):
            raise SandboxError(outcome.stderr.decode(errors="replace").strip())
        return outcome

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.settings.max_parallel), loop
        return self._slots

    async def _io_tests(self, spec: IoTestsSpec, files_dir: str) -> list[TestResult]:
        """One process per test: stdin programs read fd 0 directly, so they can't share one."""
        runs = [self._io_test(spec, files_dir, i) for i in range(len(spec.tests))]
        async with asyncio.TaskGroup() as group:  # one sandbox failure cancels the rest
            tasks = [group.create_task(run) for run in runs]
        return [task.result() for task in tasks]

    async def _io_test(self, spec: IoTestsSpec, files_dir: str, index: int) -> TestResult:
        test = spec.tests[index]
        limits = _limits(spec)
        outcome = await self._run("script", files_dir, test.input, limits)
        result = _failed_run(outcome, limits, index, test.input)
        result.expected = test.output
        if result.verdict == "accepted" and not tokens_match(
            result.output, test.output, spec.float_tolerance
        ):
            result.verdict = "wrong_answer"
        return result

    async def _function_tests(self, spec: FunctionTestsSpec, files_dir: str) -> list[TestResult]:
        """All tests in one process (each call has its own CPU budget): spawning dominates the
        cost of small functions, and the worker judges thousands of attempts."""
        n = len(spec.tests)
        limits = TestLimits(spec.time_limit_s * n, spec.memory_limit_mb, spec.time_limit_s)
        calls = [
            f"{spec.entry_point}({', '.join(json.dumps(a) for a in t.args)})" for t in spec.tests
        ]
        stdin = json.dumps([t.args for t in spec.tests])
        outcome = await self._run("function", files_dir, stdin, limits, spec.entry_point)
        per_call = outcome.report.get("results")
        if not isinstance(per_call, list) or len(per_call) != n:  # the process failed as a whole
            shared = _failed_run(outcome, limits, 0, calls[0])
            if shared.verdict == "accepted":
                shared.verdict, shared.error = "runtime_error", "The program did not report."
            return [shared.model_copy(update={"index": i, "input": calls[i]}) for i in range(n)]
        return [
            _function_result(
                spec, i, calls[i], per_call[i] if isinstance(per_call[i], dict) else {}
            )
            for i in range(n)
        ]

    async def _unit_tests(self, spec: UnitTestsSpec, files_dir: str) -> TestResult:
        """One process per attempt: the candidate, then the tests (fed on stdin), under one
        CPU budget. The report names the test that failed and the values it saw."""
        limits = TestLimits(spec.time_limit_s, spec.memory_limit_mb, spec.time_limit_s)
        outcome = await self._run("unit", files_dir, spec.test_code, limits, spec.entry_point)
        unit = UnitReport.parse(outcome.report)
        result = _failed_run(outcome, limits, 0, unit.test)
        if outcome.report.get("status") == "assertion" and result.verdict == "wrong_answer":
            result.error = assertion_text(unit)
        elif result.verdict == "runtime_error" and unit.calls:
            result.error += "\n" + returned_text(unit.calls)
        return result

    async def _checker_test(self, spec: CheckerSpec, files_dir: str, code: str) -> TestResult:
        if spec.mode == "answer":
            result = TestResult(index=0, verdict="accepted", time_s=0.0, output=code)
        else:
            run = await self._run("script", files_dir, spec.input, _limits(spec))
            result = _failed_run(run, _limits(spec), 0, spec.input)
            if result.verdict != "accepted":
                return result
        check = await self._run("checker", files_dir, result.output, _limits(spec))
        report = check.report
        if report.get("status") != "ok":
            reason = _error_text(report) or _classify(check, _limits(spec))[1]
            reason = reason or "the checker failed"
            result.verdict, result.error = "invalid_spec", "The checker failed: " + reason
        elif not report.get("ok"):
            result.verdict, result.error = "wrong_answer", report.get("message", "")
        return result


def _files(spec: Spec, code: str) -> dict[str, str]:
    """What the attempt's folder holds besides the harness (the tests of unit_tests go on stdin)."""
    files = {"solution.py": code}
    if spec.prelude:
        files["prelude.py"] = spec.prelude
    if isinstance(spec, UnitTestsSpec):
        files["assertions.py"] = helper_source("assertions.py")
    if isinstance(spec, CheckerSpec):
        files["checker.py"] = spec.code
    return files


def _limits(spec: Spec) -> TestLimits:
    return TestLimits(spec.time_limit_s, spec.memory_limit_mb)


def _function_result(spec: FunctionTestsSpec, index: int, call: str, report: dict) -> TestResult:
    """Verdict of one call, from its entry in the harness's report."""
    test = spec.tests[index]
    result = TestResult(
        index=index,
        verdict="accepted",
        time_s=round(float(report.get("cpu_s", 0.0)), 4),
        input=call,
        expected=json.dumps(test.expected),
    )
    status = report.get("status")
    if status == "time_limit" or result.time_s > spec.time_limit_s:
        result.verdict = "time_limit"
    elif status in _STATUS_VERDICTS:
        result.verdict = _STATUS_VERDICTS[status]
    elif status in ("exception", "exit"):
        result.verdict, result.error = "runtime_error", _error_text(report)
    elif "json" in report:
        result.output = str(report["json"])
        if not _json_matches(result.output, test.expected, spec.float_tolerance):
            result.verdict = "wrong_answer"
    else:
        result.verdict, result.output = "wrong_answer", str(report.get("repr", ""))
    return result


def _json_matches(text: str, expected: object, tol: float) -> bool:
    try:
        got = json.loads(text)
    except ValueError:  # the harness writes valid JSON: this report was forged
        return False
    return values_match(got, expected, tol)


_STATUS_VERDICTS: dict[str, Verdict] = {"memory": "memory_limit", "file_limit": "output_limit"}
# harness statuses that mean the verifier itself is broken, not the candidate
_SPEC_FAILURES = {"prelude_error": "The prelude failed", "tests_error": "The test code failed"}


def _failed_run(outcome: ProcessOutcome, limits: TestLimits, index: int, shown_input) -> TestResult:
    """A TestResult with the failure verdict, or 'accepted' meaning 'ran cleanly, now compare'."""
    verdict, error = _classify(outcome, limits)
    time_s = outcome.report.get("cpu_s", outcome.wall_s)
    return TestResult(
        index=index,
        verdict=verdict,
        time_s=round(min(time_s, outcome.wall_s), 4),
        input=shown_input,
        output=outcome.stdout.decode("utf-8", errors="replace"),
        error=error,
    )


def _classify(outcome: ProcessOutcome, limits: TestLimits) -> tuple[Verdict, str]:
    report, status = outcome.report, outcome.report.get("status")
    if outcome.output_exceeded or outcome.signal == signal.SIGXFSZ or status == "file_limit":
        return "output_limit", ""  # checked first: we kill a flooding test with SIGKILL
    if outcome.timed_out or outcome.signal in (signal.SIGXCPU, signal.SIGKILL):
        return "time_limit", ""
    if status == "compile_error":
        return "compile_error", report.get("error", {}).get("text", "")
    if status in _SPEC_FAILURES:
        return "invalid_spec", f"{_SPEC_FAILURES[status]}: {_error_text(report)}"
    if status == "memory":
        return "memory_limit", ""
    if status == "time_limit" or report.get("cpu_s", 0.0) > limits.time_limit_s:
        return "time_limit", ""
    if status in ("exception", "exit"):
        return "runtime_error", _error_text(report)
    if status == "assertion":
        return "wrong_answer", ""
    if outcome.signal:
        return "runtime_error", f"Killed by signal {_signal_name(outcome.signal)}." + _tail(outcome)
    if status != "ok":
        return "runtime_error", f"Exited with status {outcome.returncode}." + _tail(outcome)
    return "accepted", ""


def _error_text(report: dict) -> str:
    if report.get("status") == "exit":
        return f"SystemExit: {report.get('code', '')}"
    error = report.get("error", {})
    if "text" in error:
        return error["text"]
    lines = ["Traceback (most recent call last):"] if error.get("frames") else []
    for filename, lineno, name, line in error.get("frames", []):
        lines.append(f'  File "{filename}", line {lineno}, in {name}')
        if line:
            lines.append(f"    {line}")
    message = error.get("message", "")
    lines.append(f"{error.get('type', 'Error')}: {message}" if message else error.get("type", ""))
    return "\n".join(lines)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _tail(outcome: ProcessOutcome, lines: int = 5, line_chars: int = 250) -> str:
    text = outcome.stderr.decode("utf-8", errors="replace").strip()
    shown = [line[:line_chars] for line in text.splitlines()[-lines:]]
    return "\n" + "\n".join(shown) if text else ""


def _judgement(spec: Spec, tests: list[TestResult], time_s: float) -> Judgement:
    verdict = min((t.verdict for t in tests), key=VERDICT_PRIORITY.index)
    build = build_unit_feedback if isinstance(spec, UnitTestsSpec) else build_feedback
    feedback = build(tests, time_limit_s=spec.time_limit_s, memory_limit_mb=spec.memory_limit_mb)
    if verdict == "invalid_spec":
        feedback = tests[0].error
    return Judgement(
        passed=verdict == "accepted",
        verdict=verdict,
        feedback=feedback,
        tests=[t.excerpt() for t in tests],  # verdicts and feedback saw the whole output
        time_s=round(time_s, 4),
    )
