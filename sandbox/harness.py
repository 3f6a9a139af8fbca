"""Runs inside the sandbox: applies rlimits, then runs candidate (or checker) code.

Standard library only, and it never imports anything of ours: it executes under `python -I -S`
in a namespace with nothing of the project mounted. It reports one JSON object on the file
descriptor given as argv[1]; the host decides the verdict, so a candidate that forges a report
gains nothing (expected outputs never enter the sandbox).

argv: harness.py REPORT_FD CONFIG_JSON, where CONFIG_JSON holds mode, dir, limits and entry_point.
"""

import builtins
import json
import os
import resource
import sys
import traceback

SOLUTION = "solution.py"
CHECKER = "checker.py"
MAX_FRAMES = 3


def apply_limits(limits):
    mb = 1024 * 1024
    cpu_s = int(limits["cpu_s"]) + 1
    for name, value in (
        ("RLIMIT_CPU", (cpu_s, cpu_s + 1)),
        ("RLIMIT_AS", (limits["memory_mb"] * mb,) * 2),
        ("RLIMIT_NPROC", (limits["max_processes"],) * 2),
        ("RLIMIT_FSIZE", (limits["max_file_mb"] * mb,) * 2),
        ("RLIMIT_NOFILE", (limits["max_open_files"],) * 2),
        ("RLIMIT_CORE", (0, 0)),
    ):
        resource.setrlimit(getattr(resource, name), value)


def candidate_frames(tb, filename):
    frames = [f for f in traceback.extract_tb(tb) if f.filename == filename]
    return [[f.filename, f.lineno, f.name, (f.line or "").strip()] for f in frames[-MAX_FRAMES:]]


def error_report(exc, filename):
    status = "memory" if isinstance(exc, MemoryError) else "exception"
    return {
        "status": status,
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
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        return compile(source, filename, "exec"), None
    except (SyntaxError, ValueError) as exc:
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


def to_json(value):
    try:
        return {"status": "ok", "result": value, "json": json.dumps(value)}
    except (TypeError, ValueError, RecursionError):
        return {"status": "ok", "result": None, "repr": repr(value)[:1000]}


def main_script(config):
    code, report = load(config["dir"], SOLUTION)
    if report:
        return report
    _, report = run_module(code, SOLUTION)
    return report or {"status": "ok"}


def main_function(config):
    code, report = load(config["dir"], SOLUTION)
    if report:
        return report
    args = json.loads(sys.stdin.read() or "[]")
    namespace, report = run_module(code, SOLUTION)
    if report:
        return report
    fn = find_callable(namespace, config["entry_point"])
    if fn is None:
        msg = "no function %r and no class Solution with that method" % config["entry_point"]
        return {"status": "exception", "error": {"type": "NameError", "message": msg, "frames": []}}
    try:
        result = fn(*args)
    except SystemExit as exc:
        return {"status": "exit", "code": str(exc.code)[:200]}
    except BaseException as exc:
        return error_report(exc, SOLUTION)
    report = to_json(result)
    report.pop("result")
    return report


def main_checker(config):
    code, report = load(config["dir"], CHECKER)
    if report:
        return report
    namespace, report = run_module(code, CHECKER)
    if report:
        return report
    check = namespace.get("check")
    if not callable(check):
        return {"status": "exception", "error": {"type": "NameError", "message": "no check()", "frames": []}}
    try:
        verdict = check(sys.stdin.read())
    except BaseException as exc:
        return error_report(exc, CHECKER)
    if isinstance(verdict, tuple) and len(verdict) == 2:
        return {"status": "ok", "ok": bool(verdict[0]), "message": str(verdict[1])[:1000]}
    return {"status": "ok", "ok": bool(verdict), "message": ""}


def main():
    report_fd = int(sys.argv[1])
    config = json.loads(sys.argv[2])
    os.set_inheritable(report_fd, False)  # children the candidate spawns don't get the channel
    apply_limits(config["limits"])
    builtins.exit = builtins.quit = sys.exit  # normally added by `site`, which -S skips
    mode = {"script": main_script, "function": main_function, "checker": main_checker}
    try:
        report = mode[config["mode"]](config)
    except MemoryError:
        report = {"status": "memory"}
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["cpu_s"] = usage.ru_utime + usage.ru_stime
    os.write(report_fd, json.dumps(report).encode())
    os._exit(0)


if __name__ == "__main__":
    main()
