"""Runs inside the sandbox: applies rlimits, then runs candidate (or checker) code.

Standard library only, and it never imports anything of ours: it executes under `python -I -S`
in a namespace with nothing of the project mounted. It reports one JSON object on the file
descriptor REPORT_FD; the host decides the verdict, so a candidate that forges a report gains
nothing (expected outputs never enter the sandbox). The happy path imports no module beyond
the interpreter's start-up set (json, re and traceback cost more than the whole spawn), so
heavier imports are deferred to the paths that need them.

argv: harness.py REPORT_FD MODE DIR CPU_S MEMORY_MB MAX_PROCESSES MAX_FILE_MB MAX_OPEN_FILES
      ENTRY_POINT PER_TEST_S; MODE is script, function, unit or checker. CPU_S bounds the whole
      process; PER_TEST_S bounds each call in function mode, which runs all tests at once, and
      the whole attempt in unit mode.

Unit mode is the one exception: assert-based tests hold their expected values, and they run in
the candidate's process (as under HumanEval's own harness), so a hostile candidate could fake a
pass there. The candidate is imported as module `solution`, not run as __main__, as a test
runner imports it.

A prelude (prelude.py, when the spec has one) runs first, in the candidate's namespace, as its
own compiled file: the candidate's line numbers stay its own, and tracebacks show only its frames.
"""

import builtins
import errno
import os
import resource
import sys
import time

SOLUTION = "solution.py"
PRELUDE = "prelude.py"
CHECKER = "checker.py"
TESTS = "tests.py"  # unit mode: the test code, read from stdin (never a file the candidate reads)
ASSERTIONS = "assertions.py"
MAX_FRAMES = 3
SOURCES = {}


def apply_limits(cpu_s, memory_mb, max_processes, max_file_mb, max_open_files):
    mb = 1024 * 1024
    cpu = int(cpu_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * mb, memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_mb * mb, max_file_mb * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def candidate_frames(tb, filename):
    import linecache
    import traceback

    source = SOURCES.get(filename, "")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    frames = [f for f in traceback.extract_tb(tb) if f.filename == filename]
    return [[f.filename, f.lineno, f.name, (f.line or "").strip()] for f in frames[-MAX_FRAMES:]]


def error_report(exc, filename):
    if isinstance(exc, MemoryError):
        return {"status": "memory"}
    if isinstance(exc, TestTimeout):
        return {"status": "time_limit"}
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return {"status": "file_limit"}  # RLIMIT_FSIZE: Python ignores SIGXFSZ
    return {
        "status": "exception",
        "error": {
            "type": type(exc).__name__,
            "message": str(exc)[:500],
            "frames": candidate_frames(exc.__traceback__, filename),
        },
    }


def load(directory, filename):
    """Compile a source file; a SyntaxError becomes a compile_error report."""
    with open(os.path.join(directory, filename), encoding="utf-8", errors="replace") as f:
        source = f.read()
    SOURCES[filename] = source
    try:
        return compile(source, filename, "exec"), None
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        import traceback

        lines = traceback.format_exception_only(type(exc), exc)
        return None, {"status": "compile_error", "error": {"text": "".join(lines)[-1500:]}}


def run_module(code, filename, namespace):
    """Execute compiled code in `namespace`; returns (namespace, report-or-None)."""
    try:
        exec(code, namespace)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return namespace, {"status": "exit", "code": str(exc.code)[:200]}
    except BaseException as exc:  # the candidate's failure is data, not our crash
        return namespace, error_report(exc, filename)
    return namespace, None


def find_callable(namespace, entry_point):
    if entry_point in namespace and callable(namespace[entry_point]):
        return namespace[entry_point]
    solution = namespace.get("Solution")
    if isinstance(solution, type) and hasattr(solution, entry_point):
        return getattr(solution(), entry_point)
    return None


def run_program(directory, name="__main__"):
    """The prelude, if any, then the candidate, in one namespace: (namespace, report-or-None).
    The prelude's failures are the spec's, not the candidate's: status prelude_error."""
    namespace = {"__name__": name, "__builtins__": builtins}
    code, report = load(directory, SOLUTION)
    if report:
        return namespace, report
    if os.path.exists(os.path.join(directory, PRELUDE)):
        prelude, report = load(directory, PRELUDE)
        if not report:
            report = run_module(prelude, PRELUDE, namespace)[1]
        if report and report["status"] in ("compile_error", "exception", "exit"):
            return namespace, {"status": "prelude_error", "error": prelude_error(report)}
        if report:
            return namespace, report
    return run_module(code, SOLUTION, namespace)


def prelude_error(report):
    if report["status"] == "exit":
        return {"type": "SystemExit", "message": report["code"], "frames": []}
    return report["error"]


def main_script(directory, entry_point, per_test_s):
    return run_program(directory)[1] or {"status": "ok"}


class TestTimeout(BaseException):
    """Raised in the candidate when one call exceeds its CPU budget (BaseException, so that a
    bare `except Exception` in the candidate does not swallow it)."""


def _on_timer(signum, frame):
    raise TestTimeout()


def call_once(fn, args, per_test_s):
    """One test of a function: its own CPU-time budget, its own result or error."""
    import json
    import signal

    started = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, per_test_s)
    try:
        result = fn(*args)
    except TestTimeout:
        return {"status": "time_limit", "cpu_s": time.process_time() - started}
    except SystemExit as exc:
        report = {"status": "exit", "code": str(exc.code)[:200]}
    except BaseException as exc:
        report = error_report(exc, SOLUTION)
    else:
        try:
            report = {"status": "ok", "json": json.dumps(result)}
        except (TypeError, ValueError, RecursionError):
            report = {"status": "ok", "repr": repr(result)[:1000]}
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    report["cpu_s"] = time.process_time() - started
    return report


def main_function(directory, entry_point, per_test_s):
    """All tests of one attempt in this one process (LiveCodeBench's functional style)."""
    import json
    import signal

    calls = json.loads(sys.stdin.read() or "[]")
    namespace, report = run_program(directory)
    if report:
        return report
    fn = find_callable(namespace, entry_point)
    if fn is None:
        return missing_entry_point(entry_point)
    signal.signal(signal.SIGPROF, _on_timer)
    return {"status": "ok", "results": [call_once(fn, args, per_test_s) for args in calls]}


def missing_entry_point(entry_point):
    msg = f"no function {entry_point!r} and no class Solution with that method"
    return {"status": "exception", "error": {"type": "NameError", "message": msg, "frames": []}}


def load_assertions(directory):
    namespace = {"__name__": "assertions", "__builtins__": builtins}
    with open(os.path.join(directory, ASSERTIONS), encoding="utf-8") as f:
        exec(compile(f.read(), ASSERTIONS, "exec"), namespace)
    return namespace


def main_unit(directory, entry_point, per_test_s):
    """The candidate, then its assert-based tests, in this one process under one CPU budget.
    The tests see the candidate's namespace (HumanEval's tests call its helpers too)."""
    import signal

    assertions = load_assertions(directory)
    SOURCES[TESTS] = sys.stdin.read()
    try:
        tests = assertions["compile_tests"](SOURCES[TESTS], TESTS, {"candidate", entry_point})
    except (SyntaxError, ValueError, RecursionError) as exc:
        error = {"type": type(exc).__name__, "message": str(exc)[:500], "frames": []}
        return {"status": "tests_error", "error": error}
    signal.signal(signal.SIGPROF, _on_timer)
    signal.setitimer(signal.ITIMER_PROF, per_test_s)
    try:
        namespace, report = run_program(directory, "solution")
        if report:
            return report
        fn = find_callable(namespace, entry_point)
        if fn is None:
            return missing_entry_point(entry_point)
        return run_tests(tests, namespace, fn, assertions)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def run_tests(tests, namespace, fn, assertions):
    scope = dict(namespace)  # a `check` of the candidate's own is not mistaken for the tests'
    scope["candidate"] = fn
    assertions["install"](scope)
    try:
        exec(tests, scope)
        check = scope.get("check")
        if callable(check) and check is not namespace.get("check"):
            check(fn)
    except SystemExit as exc:
        return {"status": "exit", "code": str(exc.code)[:200], "test": test_line(exc)}
    except BaseException as exc:
        failed = isinstance(exc, AssertionError) and assertions["explain"](exc, TESTS)
        report = failed or error_report(exc, SOLUTION)
        report.setdefault("test", test_line(exc))
        if report["status"] == "exception":
            report["calls"] = assertions["calls_of"](exc, TESTS)
        return report
    return {"status": "ok"}


def test_line(exc):
    """The line of the test code that was running when `exc` was raised, or None."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TESTS:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        return None
    lines = SOURCES[TESTS].splitlines()
    return lines[line - 1].strip()[:500] if 0 < line <= len(lines) else None


def main_checker(directory, entry_point, per_test_s):
    code, report = load(directory, CHECKER)
    if report:
        return report
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    namespace, report = run_module(code, CHECKER, namespace)
    if report:
        return report
    check = namespace.get("check")
    if not callable(check):
        error = {"type": "NameError", "message": "no function check()", "frames": []}
        return {"status": "exception", "error": error}
    try:
        verdict = check(sys.stdin.read())
    except BaseException as exc:
        return error_report(exc, CHECKER)
    if isinstance(verdict, tuple) and len(verdict) == 2:
        return {"status": "ok", "ok": bool(verdict[0]), "message": str(verdict[1])[:1000]}
    return {"status": "ok", "ok": bool(verdict), "message": ""}


def emit(fd, report):
    if set(report) == {"status", "cpu_s"}:  # the common case, without importing json
        text = f'{{"status": "{report["status"]}", "cpu_s": {report["cpu_s"]!r}}}'
    else:
        import json

        text = json.dumps(report)
    os.write(fd, text.encode())


def main():
    report_fd, mode, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    cpu_s, memory_mb, max_processes, max_file_mb, max_open_files = sys.argv[4:9]
    entry_point, per_test_s = sys.argv[9], float(sys.argv[10])
    os.set_inheritable(report_fd, False)  # children the candidate spawns don't get the channel
    apply_limits(float(cpu_s), int(memory_mb), int(max_processes), int(max_file_mb),
                 int(max_open_files))  # fmt: skip
    builtins.exit = builtins.quit = sys.exit  # normally added by `site`, which -S skips
    runner = {"script": main_script, "function": main_function, "unit": main_unit,
              "checker": main_checker}[mode]  # fmt: skip
    try:
        report = runner(directory, entry_point, per_test_s)
    except MemoryError:
        report = {"status": "memory"}
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["cpu_s"] = usage.ru_utime + usage.ru_stime
    emit(report_fd, report)
    os._exit(0)


if __name__ == "__main__":
    main()
