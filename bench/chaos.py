"""Chaos benchmark: the real processes under random faults end with 0 lost, 0 doubled and 0 stuck
attempts, and no tenant over its quota.

The embedded Redis (AOF, fsync always), one gateway process and N worker processes (the bundled
model on the CPU, the real sandbox). Three tenants submit sessions of mixed strategies and
budgets over HTTP (a 429 is retried later), and cancel some of them mid-run. Faults come at
random times from a fixed seed: SIGKILL of a worker (restarted), SIGSTOP of a worker for longer
than the lease (then SIGCONT), SIGKILL of Redis (restarted from its AOF on the same port) and a
gateway restart. A monitor reads every tenant's active set all along.

At the end: every session is terminal; its attempts are numbered 1..n with no gap and no repeat,
n = attempts_used <= max_attempts; every solved session's solution passes its verifier when
judged again; no checkpoint folder is left; no tenant was ever over its quota.
Writes bench/results/chaos.json. Run: `python bench/chaos.py` (200 sessions, 4 workers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import redis

from sandbox import Sandbox, parse_spec
from sdpo.client import ApiError, SdpoClient
from sdpo.schemas import TERMINAL
from sdpo.settings import Settings
from sdpo.store import owner_active_key
from sdpo_serve.embedded import EmbeddedRedis, die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[1]
TENANT_KEYS = [f"chaos-tenant-{i}-0123456789abcdef" for i in range(3)]
QUOTA = 6
STRATEGIES = ("sdpo", "best_of_k", "multi_turn")
# Passes about one answer in thirteen, the same way every time it judges the same text.
CHECKER = "def check(output):\n    return len(output) % 13 == 0\n"
WORKER_ENV = {
    "SDPO_TORCH_THREADS": "1",
    "SDPO_HEARTBEAT_S": "0.3",
    "SDPO_CLAIM_IDLE_MS": "2000",
    "SDPO_BLOCK_MS": "300",
    "SDPO_SANDBOX_MAX_PARALLEL": "2",
}
LEASE_S = 2.0  # SDPO_CLAIM_IDLE_MS


@dataclass(frozen=True)
class ChaosConfig:
    sessions: int = 200
    workers: int = 4
    seed: int = 0
    fault_every_s: float = 6.0  # mean time between faults
    min_faults: int = 8  # faults go on until this many came and most sessions ended
    cancel_share: float = 0.1
    timeout_s: float = 1800.0


@dataclass
class ChaosReport:
    sessions: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    fault_errors: dict[str, int] = field(default_factory=dict)  # faults the harness botched
    resumes: int = 0
    attempts: int = 0
    lost: int = 0
    doubled: int = 0
    stuck: int = 0
    over_budget: int = 0
    solutions_failing: int = 0
    checkpoint_folders_left: int = 0
    quota_peak: int = 0
    quota_exceeded: int = 0
    total_s: float = 0.0

    @property
    def ok(self) -> bool:
        bad = (self.lost, self.doubled, self.stuck, self.over_budget, self.solutions_failing)
        return not any(bad) and not self.checkpoint_folders_left and not self.quota_exceeded


def problem_body(rng: random.Random) -> dict:
    strategy = rng.choice(STRATEGIES)
    return {
        "prompt": "Write anything.",
        "strategy": strategy,
        "verifier": {"type": "checker", "mode": "answer", "code": CHECKER},
        "budget": {"max_attempts": rng.choice([4, 8, 16, 24, 32])},
        "params": {"num_generations": rng.choice([2, 3]), "max_completion_length": 24},
        "seed": rng.randrange(1000),
    }


class Cluster:
    """Redis, a gateway and the workers, each one a real process we can fault."""

    def __init__(self, folder: Path, workers: int) -> None:
        self.folder, self.port = folder, free_port()
        self.redis = EmbeddedRedis(folder / "redis").start()
        self.checkpoints = folder / "checkpoints"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SDPO_")}
        self.env |= {
            "SDPO_REDIS_URL": self.redis.url,
            "SDPO_API_KEYS": ",".join(TENANT_KEYS),
            "SDPO_QUOTA_ACTIVE_SESSIONS": str(QUOTA),
            "SDPO_CHECKPOINT_DIR": str(self.checkpoints),
            "PYTHONPATH": str(ROOT),
            **WORKER_ENV,
        }
        self.gateway: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []
        self.start_gateway()
        self.workers = [
            self._spawn(["-m", "sdpo_serve.cli", "worker"], f"worker-{i}") for i in range(workers)
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("ab")
        self._logs.append(log)
        return subprocess.Popen(
            [sys.executable, *argv],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # no orphan if the benchmark itself is killed
        )

    def start_gateway(self) -> None:
        argv = ["-m", "uvicorn", "--factory", "service.app:create_app", "--port", str(self.port)]
        argv += ["--log-level", "warning", "--timeout-graceful-shutdown", "5"]
        self.gateway = self._spawn(argv, "gateway")
        _wait(lambda: _answers(f"{self.url}/healthz"), 120, "gateway")

    def restart_gateway(self) -> None:
        self.gateway.send_signal(signal.SIGTERM)
        try:
            self.gateway.wait(15)
        except subprocess.TimeoutExpired:
            self.gateway.kill()
            self.gateway.wait()
        self.start_gateway()

    def restart_worker(self, index: int) -> None:
        self.workers[index].wait()
        self.workers[index] = self._spawn(["-m", "sdpo_serve.cli", "worker"], f"worker-{index}")

    def crash_redis(self) -> None:
        port = self.redis.port
        self.redis.kill()
        for attempt in range(5):
            try:
                self.redis = EmbeddedRedis(self.folder / "redis", port=port).start(timeout_s=60)
                return
            except (RuntimeError, TimeoutError):
                if attempt == 4:
                    raise
                time.sleep(1)

    def live_workers(self) -> int:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            return httpx.get(f"{self.url}/readyz", timeout=2).json()["workers"]
        return 0

    def stop(self) -> None:
        for process in [*self.workers, self.gateway]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.gateway]:
            if process is None:
                continue
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.redis.stop()
        for log in self._logs:
            log.close()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout_s} s")
        time.sleep(0.1)


class Faults:
    """Faults at random times from a fixed seed, until stopped."""

    KINDS = ("worker_sigkill", "worker_sigstop", "redis_sigkill", "gateway_restart")

    def __init__(self, cluster: Cluster, rng: random.Random, every_s: float) -> None:
        self.cluster, self.rng, self.every_s = cluster, rng, every_s
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.calm = threading.Event()  # no more faults
        # Processes restarted by this thread die with it (PR_SET_PDEATHSIG is per thread), so
        # it runs until the cluster is stopped.
        self.stopping = threading.Event()

    def run(self) -> None:
        kinds: list[str] = []
        while not self.stopping.wait(self.rng.expovariate(1 / self.every_s)):
            if self.calm.is_set():
                continue
            kinds = kinds or self.rng.sample(self.KINDS, len(self.KINDS))  # each kind in turn
            kind = kinds.pop()
            try:
                getattr(self, kind)(self.rng.randrange(len(self.cluster.workers)))
            except Exception as error:  # the harness failed, not the service: say so, go on
                print(f"fault {kind} could not be injected: {error!r}", flush=True)
                self.errors[kind] += 1
            self.counts[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def worker_sigkill(self, index: int) -> None:
        self.cluster.workers[index].send_signal(signal.SIGKILL)
        self.cluster.restart_worker(index)

    def worker_sigstop(self, index: int) -> None:
        worker = self.cluster.workers[index]
        worker.send_signal(signal.SIGSTOP)
        time.sleep(LEASE_S * 1.5 + self.rng.random())  # its job is reclaimed meanwhile
        worker.send_signal(signal.SIGCONT)

    def redis_sigkill(self, _: int) -> None:
        self.cluster.crash_redis()

    def gateway_restart(self, _: int) -> None:
        self.cluster.restart_gateway()


class QuotaMonitor:
    """Reads every tenant's active set all along: never more than QUOTA."""

    def __init__(self, redis_url: str, tenants: list[str]) -> None:
        self.redis_url, self.tenants = redis_url, tenants
        self.peak, self.exceeded = 0, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=1, decode_responses=True)
        while not self.stopping.wait(0.05):
            with contextlib.suppress(redis.RedisError):
                for tenant in self.tenants:
                    active = client.scard(owner_active_key(tenant))
                    self.peak = max(self.peak, active)
                    self.exceeded += active > QUOTA
        client.close()


def _retrying(call, attempts: int = 240):
    """A client call through gateway and Redis restarts (and 429s: retry later)."""
    for _ in range(attempts):
        try:
            return call()
        except (httpx.TransportError, ApiError) as error:
            if isinstance(error, ApiError) and error.status not in (429, 502, 503):
                raise
            time.sleep(0.5)
    raise TimeoutError("the service did not answer")


def submit_all(cluster: Cluster, config: ChaosConfig, rng: random.Random) -> dict[str, tuple]:
    """Every session, submitted by its tenant (an Idempotency-Key makes each retry safe);
    some are cancelled a moment later. Returns sid -> (tenant key, body)."""
    sessions: dict[str, tuple] = {}
    clients = [SdpoClient(cluster.url, api_key=key, timeout_s=10) for key in TENANT_KEYS]
    to_cancel = []
    for number in range(config.sessions):
        tenant = number % len(TENANT_KEYS)
        body = problem_body(rng)
        key = f"chaos-{config.seed}-{number}"
        create = clients[tenant].create_problem
        created = _retrying(lambda c=create, b=body, k=key: c(b, k), attempts=2000)
        sessions[created.id] = (tenant, body)
        if rng.random() < config.cancel_share:
            to_cancel.append((time.monotonic() + rng.uniform(0.5, 3), tenant, created.id))
        due = [c for c in to_cancel if c[0] <= time.monotonic()]
        for item in due:
            to_cancel.remove(item)
            _cancel(clients[item[1]], item[2])
    for _, tenant, sid in to_cancel:
        _cancel(clients[tenant], sid)
    for client in clients:
        client.http.close()
    return sessions


def _cancel(client: SdpoClient, sid: str) -> None:
    try:
        _retrying(lambda: client.cancel(sid))
    except ApiError as error:
        if error.status != 409:  # 409: it had ended already
            raise


def wait_terminal(
    cluster: Cluster, sessions: dict[str, tuple], faults: Faults, config: ChaosConfig
) -> dict:
    """Every session's final view and attempts. Faults stop once min_faults came and 80% of
    the sessions ended (they go on meanwhile, even on an idle cluster): the rest end in calm.
    A session still running at the timeout counts as stuck."""
    clients = [SdpoClient(cluster.url, api_key=key, timeout_s=10) for key in TENANT_KEYS]
    views, deadline = {}, time.monotonic() + config.timeout_s
    pending = set(sessions)
    while (pending or not faults.calm.is_set()) and time.monotonic() < deadline:
        if faults.total >= config.min_faults and len(pending) <= 0.2 * len(sessions):
            faults.calm.set()
        for sid in list(pending):
            view = _retrying(lambda s=sid: clients[sessions[s][0]].get_problem(s))
            if view.status in TERMINAL:
                views[sid] = view
                pending.discard(sid)
        time.sleep(0.5)
    for sid in pending:
        views[sid] = _retrying(lambda s=sid: clients[sessions[s][0]].get_problem(s))
    attempts = {
        sid: _retrying(lambda s=sid: clients[sessions[s][0]].attempts(s, limit=500)).items
        for sid in sessions
    }
    for client in clients:
        client.http.close()
    return {"views": views, "attempts": attempts}


def check(cluster: Cluster, sessions: dict[str, tuple], seen: dict, report: ChaosReport) -> None:
    sandbox = Sandbox()
    rejudge = []
    for sid, (_, body) in sessions.items():
        view, attempts = seen["views"][sid], seen["attempts"][sid]
        indices = [a.index for a in attempts]
        expected = list(range(1, view.attempts_used + 1))
        report.doubled += len(indices) - len(set(indices))
        report.lost += len(set(expected) - set(indices))
        report.stuck += view.status not in TERMINAL
        report.over_budget += view.attempts_used > body["budget"]["max_attempts"]
        report.resumes += view.resumed
        report.attempts += len(attempts)
        if view.status == "solved":
            rejudge.append((parse_spec(body["verifier"]), view.solution.text))
    judged = asyncio.run(_judge_all(sandbox, rejudge))
    report.solutions_failing = sum(not j.passed for j in judged)
    statuses = Counter(v.status for v in seen["views"].values())
    report.statuses = dict(statuses)
    folders = cluster.checkpoints
    report.checkpoint_folders_left = len(list(folders.iterdir())) if folders.is_dir() else 0


async def _judge_all(sandbox: Sandbox, items: list) -> list:
    return list(await asyncio.gather(*(sandbox.judge_answer(spec, text) for spec, text in items)))


def run_chaos(config: ChaosConfig, folder: Path) -> ChaosReport:
    started = time.monotonic()
    rng = random.Random(config.seed)
    cluster = Cluster(folder, config.workers)
    report = ChaosReport(sessions=config.sessions)
    faults = Faults(cluster, random.Random(config.seed + 1), config.fault_every_s)
    tenants = [Settings(api_keys=k).tenant_for(k) for k in TENANT_KEYS]
    monitor = QuotaMonitor(cluster.redis.url, tenants)
    threads = [threading.Thread(target=t.run, daemon=True) for t in (faults, monitor)]
    try:
        _wait(lambda: cluster.live_workers() >= config.workers, 180, "workers")
        for thread in threads:
            thread.start()
        sessions = submit_all(cluster, config, rng)
        seen = wait_terminal(cluster, sessions, faults, config)
        faults.calm.set()
        _wait(lambda: not _folders(cluster), 30, "checkpoint cleanup") if _folders(
            cluster
        ) else None
        monitor.stopping.set()
        threads[1].join()
        check(cluster, sessions, seen, report)
    finally:
        faults.calm.set()
        monitor.stopping.set()
        cluster.stop()
        faults.stopping.set()
    report.faults, report.fault_errors = dict(faults.counts), dict(faults.errors)
    report.quota_peak, report.quota_exceeded = monitor.peak, monitor.exceeded
    report.total_s = round(time.monotonic() - started, 1)
    return report


def _folders(cluster: Cluster) -> list[Path]:
    return list(cluster.checkpoints.iterdir()) if cluster.checkpoints.is_dir() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-every-s", type=float, default=6.0)
    parser.add_argument("--min-faults", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = parser.parse_args()
    config = ChaosConfig(
        args.sessions, args.workers, args.seed, args.fault_every_s, args.min_faults
    )
    folder = Path(tempfile.mkdtemp(prefix="sdpo-chaos-"))  # logs kept for a post-mortem
    print(f"processes' logs in {folder}", flush=True)
    report = run_chaos(config, folder)
    print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": asdict(config), **asdict(report)}, indent=2))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
