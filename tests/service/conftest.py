"""Gateways on loopback (in a thread, or as a process) and real worker processes running the
worker tests' tiny random Llama on the CPU."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from sdpo.settings import Settings
from sdpo_serve.embedded import free_port
from service.app import create_app
from tests.worker import conftest as worker_fixtures

tiny_model_dir = worker_fixtures.tiny_model_dir  # the same session-scoped tiny model

REPO = Path(__file__).resolve().parents[2]
KEY_A = "alice-key-0123456789abcdef"
KEY_B = "bob-key-0123456789abcdef"

# Fast liveness for tests: a silent worker's job is reclaimed after 2 s.
WORKER_ENV = {
    "SDPO_TORCH_THREADS": "1",
    "SDPO_HEARTBEAT_S": "0.3",
    "SDPO_CLAIM_IDLE_MS": "2000",
    "SDPO_BLOCK_MS": "300",
    "SDPO_SANDBOX_MAX_PARALLEL": "2",
}


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        if value := predicate():
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.05)


@contextlib.contextmanager
def gateway_in_thread(settings: Settings) -> Iterator[str]:
    """The real app on a real loopback port, served by uvicorn in a background thread."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 15, "gateway start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def child_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDPO_")}
    return {**env, "SDPO_REDIS_URL": redis_url, "PYTHONPATH": str(REPO), **extra}


@dataclass
class Cluster:
    """A gateway process and worker processes around one Redis."""

    redis_url: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    gateway: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None
    logs: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen:
        log = subprocess.DEVNULL
        if self.log_dir is not None:
            log = (self.log_dir / f"{name}.log").open("ab")
            self.logs.append(log)
        return subprocess.Popen(
            [sys.executable, *argv], env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )

    def start_gateway(self) -> None:
        argv = ["-m", "uvicorn", "--factory", "service.app:create_app", "--port", str(self.port)]
        self.gateway = self._spawn([*argv, "--log-level", "warning"], "gateway")
        wait_until(self._gateway_up, 20, "gateway process")

    def _gateway_up(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        return False

    def start_worker(self) -> subprocess.Popen:
        worker = self._spawn(["-m", "sdpo_serve.cli", "worker"], f"worker-{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def live_workers(self) -> int:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/readyz", timeout=2).json()["workers"]
        return 0

    def wait_workers(self, count: int, timeout_s: float = 90) -> None:
        wait_until(lambda: self.live_workers() >= count, timeout_s, f"{count} live workers")

    def stop(self) -> None:
        for process in [*self.workers, self.gateway]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.gateway]:
            if process is not None:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for log in self.logs:
            log.close()


def checker(passes: bool) -> dict:
    """A verifier that judges the raw answer: always passes, or never does."""
    return {
        "type": "checker",
        "mode": "answer",
        "code": f"def check(output):\n    return {passes}\n",
    }


def problem(passes: bool = False, **overrides) -> dict:
    body = {
        "prompt": "Write anything.",
        "verifier": checker(passes),
        "budget": {"max_attempts": 6},
        "params": {"num_generations": 2, "max_completion_length": 8},
    }
    return {**body, **overrides}


def comparison(**overrides) -> dict:
    body = problem(**overrides)
    sampling = body.pop("params")
    return {"params": {"sdpo": sampling, "best_of_k": sampling}, **body}


class Serve:
    def __init__(self, data_dir: Path, env: dict[str, str], log: Path) -> None:
        self.port, self.data_dir, self.log = free_port(), data_dir, log
        argv = [
            "-m",
            "sdpo_serve.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
        ]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, *argv], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._ready, 120, "sdpo serve ready")

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def redis_url(self) -> str:
        return (self.data_dir / "redis" / "redis.url").read_text()

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return self.process.wait(60)


@pytest.fixture
def started():
    """Every `sdpo serve` a test starts; killed if the test left it running."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
