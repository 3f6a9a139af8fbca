"""Run the harness on one test inside bubblewrap, with rlimits, a wall timeout and output caps.

What it isolates (with bwrap): network (a new, empty network namespace), other processes (PID
namespace: everything started inside dies when the test ends, detached or not), IPC, hostname,
the file system (read-only /usr and interpreter, no /etc, /home, project or host /tmp; a private
size-capped tmpfs as working folder), the environment (empty), the user (nobody in a new user
namespace, no capabilities), and the terminal (new session). Rlimits bound CPU seconds,
address space, processes, file size and open files per test process.

What it does not isolate: the total memory of several processes of one test (each has its own
address-space limit; there is no cgroup), CPU time stolen from neighbours while a test runs, and
kernel bugs. In weak mode (no bwrap, SDPO_SANDBOX_ALLOW_WEAK=1) only the rlimits, the empty
environment and the process group hold: files, network and detached children are NOT contained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .report import parse_report
from .settings import SandboxSettings

INNER_DIR = "/sandbox"  # where the attempt's files appear inside the sandbox
_READ_CHUNK = 1 << 16
_PIPE_GRACE_S = 1.0  # how long to wait for pipes to close after the process is gone


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing and weak mode is not allowed."""


@dataclass(frozen=True)
class TestLimits:
    """Limits of one test process."""

    __test__ = False

    time_limit_s: float  # CPU seconds of the whole process (all its tests)
    memory_limit_mb: int
    per_test_s: float = 0.0  # CPU seconds per call, in function mode


@dataclass
class ProcessOutcome:
    """What the host observed of one sandboxed run; the judge turns it into a verdict."""

    returncode: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    report: dict = field(default_factory=dict)
    wall_s: float = 0.0
    timed_out: bool = False
    output_exceeded: bool = False


def isolation_mode(settings: SandboxSettings) -> str:
    """'bwrap' or 'weak'; raises SandboxUnavailable when neither is allowed."""
    if shutil.which(settings.bwrap):
        return "bwrap"
    if settings.allow_weak:
        return "weak"
    raise SandboxUnavailable(
        f"bubblewrap ({settings.bwrap!r}) was not found on PATH, so untrusted code cannot be "
        "isolated. Install it (Debian/Ubuntu: apt-get install bubblewrap) or set "
        "SDPO_SANDBOX_ALLOW_WEAK=1 to accept rlimit-only isolation."
    )


def _traversable_by_others(path: str) -> bool:
    parts = Path(path).resolve().parts
    return all(os.stat(os.path.join(*parts[:i])).st_mode & 0o001 for i in range(1, len(parts)))


def sandbox_python(settings: SandboxSettings) -> tuple[str, str]:
    """(interpreter, prefix) that the sandboxed user can reach.

    Started as root we drop to `nobody`, who cannot enter e.g. /root/.pyenv: then fall back to
    the system's /usr/bin/python3 rather than weaken the sandbox.
    """
    python, prefix = settings.python, os.path.realpath(settings.python_prefix)
    if os.geteuid() != 0 or _traversable_by_others(python):
        return python, prefix
    if os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3", "/usr"
    raise SandboxUnavailable(
        f"the sandbox user (uid {settings.sandbox_uid}) cannot reach {python}; set "
        "SDPO_SANDBOX_PYTHON and SDPO_SANDBOX_PYTHON_PREFIX to a world-readable Python 3.11+."
    )


def _system_binds() -> list[str]:
    """Read-only /usr plus the usual top-level links (or folders) into it."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib32", "/lib64", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def bwrap_argv(
    settings: SandboxSettings, prefix: str, files_dir: str, inner: list[str]
) -> list[str]:
    argv = [shutil.which(settings.bwrap) or settings.bwrap]
    argv += ["--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    argv += ["--cap-drop", "ALL", "--clearenv", "--hostname", "sandbox"]
    argv += _system_binds()
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(settings.tmpfs_mb << 20), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    argv += ["--ro-bind", files_dir, INNER_DIR, "--", *inner]
    return argv


def _launcher(settings: SandboxSettings) -> list[str]:
    """Prefix for the sandbox command: dies with this process, and never runs as root.

    The parent-death signal matters when the worker itself is SIGKILLed: nobody is left to
    enforce the wall limit, so the sandbox must go too. Root would make RLIMIT_NPROC void,
    so root drops to an unprivileged uid first.
    """
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return []
    argv = [setpriv, "--pdeathsig", "KILL"]
    if os.geteuid() == 0:
        uid = str(settings.sandbox_uid)
        argv += ["--reuid", uid, "--regid", uid, "--clear-groups"]
    return argv


def _user_kwargs(settings: SandboxSettings) -> dict:
    """Without setpriv, still drop root (then only the parent-death signal is missing)."""
    if os.geteuid() != 0 or shutil.which("setpriv"):
        return {}
    uid = settings.sandbox_uid
    return {"user": uid, "group": uid, "extra_groups": []}


class _Capture:
    """Drains a pipe into memory, up to a cap; past the cap it calls `on_exceed` once."""

    def __init__(self, limit: int, on_exceed) -> None:
        self.data = bytearray()
        self.limit = limit
        self.exceeded = False
        self._on_exceed = on_exceed

    async def drain(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(_READ_CHUNK):
            if self.exceeded:
                continue  # keep draining so the writer is not blocked until it is killed
            room = self.limit - len(self.data)
            self.data += chunk[:room]
            if len(chunk) > room:
                self.exceeded = True
                self._on_exceed()


async def _feed(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        writer.close()


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.ReadTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_READ_CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class HarnessRun:
    """One execution of the harness: which mode, on which files, fed what."""

    harness_mode: str  # script | function | checker (see harness.py)
    files_dir: str
    stdin: bytes
    limits: TestLimits
    entry_point: str = ""


class Isolator:
    """Starts harness runs in the configured isolation; resolves paths once, not per test."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.mode = isolation_mode(settings)  # refuses here, before any code runs
        self.python, self.prefix = sandbox_python(settings)
        self._launcher = _launcher(settings)
        self._user_kwargs = _user_kwargs(settings)

    def _argv(self, run: HarnessRun, report_fd: int) -> list[str]:
        inner_dir = INNER_DIR if self.mode == "bwrap" else run.files_dir
        s, limits = self.settings, run.limits
        inner = [self.python, "-I", "-S", f"{inner_dir}/harness.py", str(report_fd)]
        inner += [run.harness_mode, inner_dir, str(limits.time_limit_s)]
        inner += [str(limits.memory_limit_mb), str(s.max_processes), str(s.max_file_mb)]
        inner += [str(s.max_open_files), run.entry_point, str(limits.per_test_s)]
        if self.mode == "bwrap":
            inner = bwrap_argv(s, self.prefix, run.files_dir, inner)
        return self._launcher + inner

    async def run(self, run: HarnessRun) -> ProcessOutcome:
        """Run `harness.py` once on one test; never raises because the candidate misbehaved."""
        report_r, report_w = os.pipe()
        scratch = _weak_scratch_dir() if self.mode == "weak" else None
        started = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(run, report_w),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(report_w,),
                start_new_session=True,
                cwd=scratch,
                env={},
                **self._user_kwargs,
            )
        except BaseException:
            os.close(report_r)
            raise
        finally:
            os.close(report_w)
        try:
            return await self._supervise(proc, run, report_r, started)
        finally:
            _kill_group(proc)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)

    async def _supervise(self, proc, run: HarnessRun, report_fd: int, started: float):
        kill = lambda: _kill_group(proc)  # noqa: E731
        out = _Capture(self.settings.stdout_limit_kb << 10, kill)
        err = _Capture(self.settings.stderr_limit_kb << 10, kill)
        rep = _Capture(1 << 20, kill)
        report_reader, report_transport = await _pipe_reader(report_fd)
        pipes = asyncio.gather(
            _feed(proc.stdin, run.stdin),
            out.drain(proc.stdout),
            err.drain(proc.stderr),
            rep.drain(report_reader),
        )
        wall_limit = run.limits.time_limit_s * self.settings.wall_factor
        wall_limit += self.settings.wall_slack_s
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proc.wait(), timeout=wall_limit)
            except TimeoutError:
                timed_out = True
                kill()
                await proc.wait()
            wall_s = time.perf_counter() - started
            # a survivor may hold a pipe open (weak mode only): then stop listening
            await asyncio.wait([pipes], timeout=_PIPE_GRACE_S)
        finally:
            pipes.cancel()
            report_transport.close()
        return _outcome(proc.returncode, (out, err, rep), wall_s, timed_out)


def _outcome(returncode: int, captures, wall_s: float, timed_out: bool) -> ProcessOutcome:
    out, err, rep = captures
    # bwrap reports a signal death of its child as 128 + signal; a direct child as -signal
    sig = -returncode if returncode < 0 else (returncode - 128 if returncode > 128 else None)
    try:
        report = json.loads(bytes(rep.data)) if rep.data and not rep.exceeded else {}
    except ValueError:
        report = {}
    report = parse_report(report)
    return ProcessOutcome(
        returncode=returncode,
        signal=sig,
        stdout=bytes(out.data),
        stderr=bytes(err.data),
        report=report,
        wall_s=wall_s,
        timed_out=timed_out,
        output_exceeded=out.exceeded or err.exceeded,
    )


DIR_PREFIX = (
    "sdpo-sbx-"  # + the owning process id: lets a later process sweep what a killed one left
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_dirs() -> None:
    """Remove attempt folders of processes that died without cleaning up (e.g. SIGKILL)."""
    for path in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        owner = path.name[len(DIR_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


def _weak_scratch_dir() -> str:
    path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-weak-")
    os.chmod(path, 0o777)  # the test may run as nobody
    return path


@lru_cache(maxsize=4)
def helper_source(name: str) -> str:
    """A file of this package that runs inside the sandbox (harness.py, assertions.py)."""
    return Path(__file__).with_name(name).read_text(encoding="utf-8")


def write_files(directory: Path, files: dict[str, str]) -> None:
    """Place the attempt's files where the sandboxed user can read but not change them."""
    directory.chmod(0o755)
    for name, text in {"harness.py": helper_source("harness.py"), **files}.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
