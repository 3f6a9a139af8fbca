"""Hostile programs: each must get a verdict while the host sees no effect."""

import asyncio
import os
import socket
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from sandbox import parse_spec
from sandbox.result import MAX_EXCERPT_CHARS

ONE = parse_spec({"type": "io_tests", "tests": [{"input": "", "output": "ok"}], "time_limit_s": 1})


def judge(sandbox, code, spec=ONE):
    started = time.perf_counter()
    result = asyncio.run(sandbox.judge(spec, textwrap.dedent(code)))
    return result, time.perf_counter() - started


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def sandbox_uid_processes() -> int:
    """Live (non-zombie) processes of the sandbox user; zombies await the host's init only."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == 65534:
                count += "State:\tZ" not in (entry / "status").read_text()
        except OSError:
            continue
    return count


def test_fork_bomb_is_contained(sandbox):
    before = sandbox_uid_processes()
    code = """\
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    result, elapsed = judge(sandbox, code)
    assert result.verdict in ("time_limit", "runtime_error")
    assert elapsed < 10
    time.sleep(0.2)
    assert sandbox_uid_processes() <= before
    assert os.fork  # the host can still work: the rest of this suite runs


def test_memory_bomb(sandbox):
    result, _ = judge(sandbox, "x = bytearray(1 << 34)\n")
    assert result.verdict == "memory_limit"
    grow, _ = judge(sandbox, "a = []\nwhile True:\n    a.append(bytearray(10**7))\n")
    assert grow.verdict == "memory_limit"
    assert grow.feedback == "Memory limit exceeded on test 1 of 1 (limit 256 MB).\nInput:\n(empty)"


def test_sleeper_and_sigterm_ignoring_loop_are_killed(sandbox):
    sleeper, elapsed = judge(sandbox, "import time\ntime.sleep(60)\n")
    assert sleeper.verdict == "time_limit" and elapsed < 5
    code = """\
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            pass
    """
    spinner, elapsed = judge(sandbox, code)
    assert spinner.verdict == "time_limit" and elapsed < 5
    assert spinner.feedback.startswith("Time limit exceeded on test 1 of 1 (limit 1 s).")


def test_detached_children_do_not_outlive_the_verdict(sandbox):
    marker = f"sdpo-detached-{uuid.uuid4().hex}"
    code = f"""\
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                sleep = "import time; time.sleep(120)"
                os.execv(sys.executable, [sys.executable, "-c", sleep, "{marker}"])
            os._exit(0)
        print("ok")
    """
    result, _ = judge(sandbox, code)
    assert result.passed
    time.sleep(0.3)
    assert processes_with(marker) == []


def test_no_network_to_host_loopback(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept_loop():
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept_loop)
    thread.start()
    code = f"""\
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=1)
            print("connected")
        except OSError as exc:
            print("blocked", type(exc).__name__)
    """
    result, _ = judge(sandbox, code)
    thread.join()
    server.close()
    assert result.tests[0].output.startswith("blocked")
    assert accepted == []


def test_environment_and_host_files_are_invisible(sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("SDPO_TEST_SECRET", "hunter2")
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("hunter2")
    secret_file.chmod(0o644)
    project = Path(__file__).resolve().parents[2] / "pyproject.toml"
    paths = [
        str(secret_file),
        str(project),
        "/etc/passwd",
        "/root/.bashrc",
        os.path.expanduser("~"),
    ]
    code = f"""\
        import os
        print(dict(os.environ))
        print(open("/proc/1/environ", "rb").read())
        for path in {paths!r}:
            print(path, os.path.exists(path))
    """
    result, _ = judge(sandbox, code)
    out = result.tests[0].output
    assert "hunter2" not in out
    assert " True" not in out, out


def test_writes_outside_the_sandbox_fail(sandbox, tmp_path):
    target = tmp_path / "written-by-candidate"
    tmp_path.chmod(0o777)
    code = f"""\
        for path in ["{target}", "/usr/evil", "/sandbox/solution.py", "/tmp/inside-only"]:
            try:
                open(path, "w").write("x")
                print(path, "written")
            except OSError as exc:
                print(path, type(exc).__name__)
    """
    result, _ = judge(sandbox, code)
    lines = result.tests[0].output.splitlines()
    assert lines[-1] == "/tmp/inside-only written"  # the private tmpfs is writable
    assert not any(line.endswith(" written") for line in lines[:-1]), lines
    assert not target.exists() and not Path("/tmp/inside-only").exists()


def test_infinite_stdout_and_stderr_are_capped(sandbox):
    flood, elapsed = judge(sandbox, "while True:\n    print('x' * 4096)\n")
    assert flood.verdict == "output_limit" and elapsed < 5
    assert flood.tests[0].truncated and len(flood.tests[0].output) == MAX_EXCERPT_CHARS
    assert len(flood.model_dump_json()) < 4 * MAX_EXCERPT_CHARS  # not the megabyte captured
    err, _ = judge(sandbox, "import sys\nwhile True:\n    sys.stderr.write('e' * 4096)\n")
    assert err.verdict == "output_limit"


def test_a_long_wrong_output_is_judged_whole_and_kept_as_an_excerpt(sandbox):
    spec = parse_spec({"type": "io_tests", "tests": [{"output": "x" * 300_000}]})
    assert judge(sandbox, "print('x' * 300_000)\n", spec)[0].passed
    wrong, _ = judge(sandbox, "print('x' * 299_999)\n", spec)
    assert wrong.verdict == "wrong_answer" and wrong.tests[0].truncated
    assert wrong.tests[0].output == "x" * MAX_EXCERPT_CHARS
    assert "Output:\n" + "x" * 250 + "...\nExpected:" in wrong.feedback


def test_segfault(sandbox):
    result, _ = judge(sandbox, "import ctypes\nctypes.string_at(0)\n")
    assert result.verdict == "runtime_error"
    assert "Killed by signal SIGSEGV." in result.feedback


def test_disk_fill_is_bounded(sandbox):
    one_file, _ = judge(
        sandbox, "f = open('/tmp/big', 'wb')\nwhile True:\n    f.write(b'0' * 65536)\n"
    )
    assert one_file.verdict == "output_limit"  # RLIMIT_FSIZE
    code = """\
        i = 0
        while True:
            with open(f"/tmp/f{i}", "wb") as f:
                f.write(b"0" * (8 << 20))
            i += 1
    """
    many, _ = judge(sandbox, code)
    assert many.verdict == "runtime_error"
    assert "No space left on device" in many.feedback


@pytest.mark.skipif(os.geteuid() != 0, reason="only root is dropped to nobody")
def test_root_is_dropped_so_process_limits_hold(sandbox):
    code = """\
        import os, threading, time
        print(os.getuid())
        started = 0
        try:
            for _ in range(50):
                threading.Thread(target=time.sleep, args=(0.5,), daemon=True).start()
                started += 1
        except RuntimeError:
            pass
        print(started)
    """
    result, _ = judge(sandbox, code)
    uid, started = result.tests[0].output.split()
    assert uid == "65534"
    assert int(started) < 8


def test_cannot_signal_host_processes(sandbox):
    code = f"""\
        import os, signal
        try:
            os.kill({os.getpid()}, signal.SIGKILL)
            print("sent")
        except OSError as exc:
            print(type(exc).__name__)
    """
    result, _ = judge(sandbox, code)
    assert result.tests[0].output.strip() == "ProcessLookupError"
