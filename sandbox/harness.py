"""Runs inside the sandbox: applies rlimits, then runs candidate (or checker) code.

Standard library only, and it never imports anything of ours: it executes under `python -I -S`
in a namespace with nothing of the project mounted. It reports one JSON object on the file
descriptor REPORT_FD; the host decides the verdict, so a candidate that forges a report gains
nothing (expected outputs never enter the sandbox). The happy path imports no module beyond
the interpreter's start-up set (json, re and traceback cost more than the whole spawn), so
heavier imports are deferred to the paths that need them.

argv: harness.py REPORT_FD MODE DIR CPU_S MEMORY_MB MAX_PROCESSES MAX_FILE_MB MAX_OPEN_FILES
      ENTRY_POINT PER_TEST_S; MODE is script, function or checker. CPU_S bounds the whole
      process; PER_TEST_S bounds each call in function mode, which runs all tests at once.
"""

import builtins
import errno
import os
import resource
import sys
import time

SOLUTION = "solution.py"
CHECKER = "checker.py"
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


def run_module(code, filename):
    """Execute compiled code as __main__; returns (namespace, report-or-None)."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
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


def main_script(directory, entry_point, per_test_s):
    code, report = load(directory, SOLUTION)
    if report:
        return report
    return run_module(code, SOLUTION)[1] or {"status": "ok"}


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

    code, report = load(directory, SOLUTION)
    if report:
        return report
    calls = json.loads(sys.stdin.read() or "[]")
    namespace, report = run_module(code, SOLUTION)
    if report:
        return report
    fn = find_callable(namespace, entry_point)
    if fn is None:
        msg = f"no function {entry_point!r} and no class Solution with that method"
        return {"status": "exception", "error": {"type": "NameError", "message": msg, "frames": []}}
    signal.signal(signal.SIGPROF, _on_timer)
    return {"status": "ok", "results": [call_once(fn, args, per_test_s) for args in calls]}


def main_checker(directory, entry_point, per_test_s):
    code, report = load(directory, CHECKER)
    if report:
        return report
    namespace, report = run_module(code, CHECKER)
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
    runner = {"script": main_script, "function": main_function, "checker": main_checker}[mode]
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
