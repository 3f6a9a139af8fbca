"""Judging one attempt against a verifier spec: run every test in the sandbox, then decide.

The `Sandbox` object is the Python API the worker uses. It is async so that judging a batch of
attempts never blocks the worker's event loop, and one semaphore bounds the test processes that
run at once across all attempts being judged.
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .compare import tokens_match, values_match
from .extract import NO_CODE_FEEDBACK, extract_code
from .feedback import build_feedback
from .isolation import HarnessRun, Isolator, ProcessOutcome, TestLimits, write_files
from .result import VERDICT_PRIORITY, Judgement, TestResult, Verdict
from .settings import SandboxSettings, get_settings
from .spec import CheckerSpec, FunctionTestsSpec, IoTestsSpec

Spec = IoTestsSpec | FunctionTestsSpec | CheckerSpec


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the candidate): e.g. bwrap could not set up namespaces."""


class Sandbox:
    """Judges candidate programs in isolated processes; see `isolation` for what that means."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or get_settings()
        self._isolator = Isolator(self.settings)  # refuses here, before any code runs
        self.mode = self._isolator.mode
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    async def judge_answer(self, spec: Spec, answer: str) -> Judgement:
        """Judge a model's raw answer: extract the code first (the checker's answer mode
        judges the raw text itself)."""
        if isinstance(spec, CheckerSpec) and spec.mode == "answer":
            return await self.judge(spec, answer)
        code, fenced = extract_code(answer)
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
        with tempfile.TemporaryDirectory(prefix="sdpo-sbx-") as tmp:
            files = {"solution.py": code}
            if isinstance(spec, CheckerSpec):
                files["checker.py"] = spec.code
            write_files(Path(tmp), files)
            if isinstance(spec, IoTestsSpec):
                runs = [self._io_test(spec, tmp, i) for i in range(len(spec.tests))]
            elif isinstance(spec, FunctionTestsSpec):
                runs = [self._function_test(spec, tmp, i) for i in range(len(spec.tests))]
            else:
                runs = [self._checker_test(spec, tmp, code)]
            async with asyncio.TaskGroup() as group:  # one sandbox failure cancels the rest
                tasks = [group.create_task(run) for run in runs]
            tests = [task.result() for task in tasks]
        return _judgement(spec, tests, time.perf_counter() - started)

    async def _run(self, harness_mode: str, files_dir: str, stdin: str, spec: Spec, entry=""):
        limits = TestLimits(spec.time_limit_s, spec.memory_limit_mb)
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

    async def _io_test(self, spec: IoTestsSpec, files_dir: str, index: int) -> TestResult:
        test = spec.tests[index]
        outcome = await self._run("script", files_dir, test.input, spec)
        result = _failed_run(outcome, spec, index, test.input)
        result.expected = test.output
        if result.verdict == "accepted" and not tokens_match(
            result.output, test.output, spec.float_tolerance
        ):
            result.verdict = "wrong_answer"
        return result

    async def _function_test(self, spec: FunctionTestsSpec, files_dir: str, i: int) -> TestResult:
        test = spec.tests[i]
        call = f"{spec.entry_point}({', '.join(json.dumps(a) for a in test.args)})"
        stdin = json.dumps(test.args)
        outcome = await self._run("function", files_dir, stdin, spec, spec.entry_point)
        result = _failed_run(outcome, spec, i, call)
        result.expected = json.dumps(test.expected)
        if result.verdict != "accepted":
            return result
        report = outcome.report
        if "json" in report:
            result.output = report["json"]
            if values_match(json.loads(report["json"]), test.expected, spec.float_tolerance):
                return result
        else:
            result.output = report.get("repr", "")
        result.verdict = "wrong_answer"
        return result

    async def _checker_test(self, spec: CheckerSpec, files_dir: str, code: str) -> TestResult:
        if spec.mode == "answer":
            result = TestResult(index=0, verdict="accepted", time_s=0.0, output=code)
        else:
            run = await self._run("script", files_dir, spec.input, spec)
            result = _failed_run(run, spec, 0, spec.input)
            if result.verdict != "accepted":
                return result
        check = await self._run("checker", files_dir, result.output, spec)
        report = check.report
        if report.get("status") != "ok":
            reason = _error_text(report) or _classify(check, spec)[1] or "the checker failed"
            result.verdict, result.error = "invalid_spec", "The checker failed: " + reason
        elif not report.get("ok"):
            result.verdict, result.error = "wrong_answer", report.get("message", "")
        return result


def _failed_run(outcome: ProcessOutcome, spec: Spec, index: int, shown_input) -> TestResult:
    """A TestResult with the failure verdict, or 'accepted' meaning 'ran cleanly, now compare'."""
    verdict, error = _classify(outcome, spec)
    time_s = outcome.report.get("cpu_s", outcome.wall_s)
    return TestResult(
        index=index,
        verdict=verdict,
        time_s=round(min(time_s, outcome.wall_s), 4),
        input=shown_input,
        output=outcome.stdout.decode("utf-8", errors="replace"),
        error=error,
    )


def _classify(outcome: ProcessOutcome, spec: Spec) -> tuple[Verdict, str]:
    report, status = outcome.report, outcome.report.get("status")
    if outcome.output_exceeded or outcome.signal == signal.SIGXFSZ or status == "file_limit":
        return "output_limit", ""  # checked first: we kill a flooding test with SIGKILL
    if outcome.timed_out or outcome.signal in (signal.SIGXCPU, signal.SIGKILL):
        return "time_limit", ""
    if status == "compile_error":
        return "compile_error", report["error"]["text"]
    if status == "memory":
        return "memory_limit", ""
    if report.get("cpu_s", 0.0) > spec.time_limit_s:
        return "time_limit", ""
    if status in ("exception", "exit"):
        return "runtime_error", _error_text(report)
    if outcome.signal:
        return "runtime_error", f"Killed by signal {_signal_name(outcome.signal)}." + _tail(outcome)
    if status != "ok":
        return "runtime_error", f"Exited with status {outcome.returncode}." + _tail(outcome)
    return "accepted", ""


def _error_text(report: dict) -> str:
    if report.get("status") == "exit":
        return f"SystemExit: {report['code']}"
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


def _tail(outcome: ProcessOutcome, lines: int = 5) -> str:
    text = outcome.stderr.decode("utf-8", errors="replace").strip()
    return "\n" + "\n".join(text.splitlines()[-lines:]) if text else ""


def _judgement(spec: Spec, tests: list[TestResult], time_s: float) -> Judgement:
    verdict = min((t.verdict for t in tests), key=VERDICT_PRIORITY.index)
    feedback = build_feedback(
        tests, time_limit_s=spec.time_limit_s, memory_limit_mb=spec.memory_limit_mb
    )
    if verdict == "invalid_spec":
        feedback = tests[0].error
    return Judgement(
        passed=verdict == "accepted",
        verdict=verdict,
        feedback=feedback,
        tests=tests,
        time_s=round(time_s, 4),
    )
