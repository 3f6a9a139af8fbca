"""Gateway benchmark: status reads (GET /v1/problems/{id}) with 200 concurrent clients on
loopback, next to a bare FastAPI endpoint measured in the same run.

Both servers are one uvicorn process with the same options, up at the same time. The status
read is authenticated and reads a session with 8 committed steps from a real Redis.
* Saturation: each client sends its next request as soon as the answer arrives. Gives the
  throughput; the servers alternate, round by round, and the ratio is the median of the
  rounds' ratios (these machines are shared and their load drifts).
* Paced: the same 200 clients, each on a fixed schedule; latency counts from the scheduled send
  time, so a slow answer also counts against the requests it delayed. Two loads: `polling`,
  every client reading every 0.5 s as `sdpo submit --wait` does, and `half_bare`, half the bare
  endpoint's saturation throughput (what the throughput target asks the gateway to carry).
Targets: p99 <= 10 ms at the polling load; saturation throughput >= half the bare endpoint's.
Writes bench/results/gateway.json. Run: `make bench-gateway` or `python bench/gateway_latency.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from sdpo.schemas import AttemptPublic, ProblemCreate, StepPublic
from sdpo.settings import Settings
from sdpo.store import Claim, CreateRequest, JobQueue, StepCommit, Store
from sdpo_serve.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]

API_KEY = "bench-key-0123456789abcdef"
P99_TARGET_MS = 10.0
POLL_S = 0.5  # how often `sdpo submit --wait` reads the status
BARE_APP = "gateway_latency:bare_app"

bare_app = FastAPI()


@bare_app.get("/status")
async def bare_status() -> dict:
    return {"status": "ok"}


@dataclass(frozen=True)
class Load:
    clients: int
    seconds: float
    rate_rps: float | None = None  # None: saturation


@dataclass
class Figures:
    requests: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _request(path: str, port: int) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"
    ).encode()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    raise ValueError("no Content-Length in the answer")


async def _one_client(port: int, request: bytes, load: Load, index: int, out: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    deadline = start + load.seconds
    period = load.clients / load.rate_rps if load.rate_rps else 0.0
    due = start + period * index / load.clients  # spread the paced clients over one period
    while True:
        if period:
            await asyncio.sleep(max(due - time.perf_counter(), 0))
        sent = due if period else time.perf_counter()
        if sent >= deadline:
            break
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(_content_length(head))
        out["latency"].append(time.perf_counter() - sent)
        out["errors"] += head[9:12] != b"200"
        due += period
    writer.close()


async def run_load(port: int, path: str, load: Load) -> Figures:
    out: dict = {"latency": [], "errors": 0}
    request = _request(path, port)
    started = time.perf_counter()
    await asyncio.gather(*(_one_client(port, request, load, i, out) for i in range(load.clients)))
    elapsed = time.perf_counter() - started
    ms = sorted(x * 1000 for x in out["latency"])
    return Figures(
        requests=len(ms),
        throughput_rps=len(ms) / elapsed,
        p50_ms=statistics.median(ms),
        p99_ms=ms[int(0.99 * (len(ms) - 1))],
        errors=out["errors"],
    )


def start_server(target: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", *target, "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log", "--loop", "asyncio"]
    process = subprocess.Popen(argv, env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return process, port
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server {target} did not start")


async def seed_session(redis_url: str, steps: int = 8) -> str:
    """A running session with `steps` committed steps of 8 attempts, as a worker leaves it."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    store, queue = Store(redis), JobQueue(redis)
    await queue.ensure_group()
    tests = [{"args": [[2, 1]], "expected": [1, 4]}]
    problem = ProblemCreate(
        prompt="Write f(xs) that returns the sorted squares of xs.",
        verifier={"type": "function_tests", "entry_point": "f", "tests": tests},
        budget={"max_attempts": 128},
    )
    owner = Settings(api_keys=API_KEY).tenant_for(API_KEY)
    sid = (await store.create(CreateRequest(owner, [problem]))).ids[0]
    job = await queue.read("bench", 1000)
    claim = await store.claim(sid, job.id, "bench")
    assert isinstance(claim, Claim)
    for step in range(steps):
        attempts = [
            AttemptPublic(index=step * 8 + i + 1, step=step, text="```python\ndef f(xs): ...\n```",
                          code="def f(xs): ...", passed=False, verdict="wrong_answer")
            for i in range(8)
        ]  # fmt: skip
        record = StepPublic(
            step=step, attempts=8, attempts_used=(step + 1) * 8, pass_count=0, elapsed_s=step + 1.0,
            phase_s={"generate": 0.61, "judge": 0.12, "teacher": 0.09, "train": 0.2, "sync": 0.0},
            metrics={"loss": 0.012, "mean_divergence": 0.03, "grad_norm": 0.4},
        )  # fmt: skip
        await store.commit_step(StepCommit(sid, claim.state.lease, record, attempts))
    await redis.aclose()
    return sid


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    path: str


def _figures(figures: Figures) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(figures).items()}


def saturation_rounds(servers: list[Server], args: argparse.Namespace) -> list[dict]:
    """Saturation throughput, the servers interleaved round by round (the machine's load
    drifts: each round's ratio compares like with like)."""
    for server in servers:  # warm-up: connection pools, caches
        asyncio.run(run_load(server.port, server.path, Load(args.clients, args.warmup_s)))
    rounds = []
    for _ in range(args.rounds):
        load = Load(args.clients, args.seconds)
        figures = {s.name: asyncio.run(run_load(s.port, s.path, load)) for s in servers}
        ratio = figures["gateway"].throughput_rps / figures["bare"].throughput_rps
        rounds.append({**{k: _figures(f) for k, f in figures.items()}, "ratio": round(ratio, 3)})
    return rounds


def paced_loads(servers: list[Server], rates: dict[str, float], args) -> dict[str, dict]:
    paced = {}
    for name, rate in rates.items():
        load = Load(args.clients, args.seconds, rate)
        paced[name] = {"rate_rps": round(rate, 1)}
        for server in servers:
            paced[name][server.name] = _figures(
                asyncio.run(run_load(server.port, server.path, load))
            )
    return paced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved saturation rounds")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gateway.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), fsync="everysec") as redis:
        sid = asyncio.run(seed_session(redis.url))
        env = {**os.environ, "SDPO_REDIS_URL": redis.url, "SDPO_API_KEYS": API_KEY}
        bare_proc, bare_port = start_server(["--app-dir", str(ROOT / "bench"), BARE_APP], env)
        gw_proc, gw_port = start_server(["--factory", "service.app:create_app"], env)
        servers = [Server("bare", bare_port, "/status")]
        servers.append(Server("gateway", gw_port, f"/v1/problems/{sid}"))
        try:
            rounds = saturation_rounds(servers, args)
            bare_rps = statistics.median(r["bare"]["throughput_rps"] for r in rounds)
            rates = {"polling": args.clients / POLL_S, "half_bare": bare_rps / 2}
            paced = paced_loads(servers, rates, args)
        finally:
            for process in (bare_proc, gw_proc):
                process.terminate()
                process.wait(10)
    report = summarize(rounds, paced, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))


def summarize(rounds: list[dict], paced: dict, args: argparse.Namespace) -> dict:
    ratio = statistics.median(r["ratio"] for r in rounds)
    polling, half = paced["polling"], paced["half_bare"]
    summary = {
        "clients": args.clients,
        "gateway_throughput_rps": statistics.median(r["gateway"]["throughput_rps"] for r in rounds),
        "bare_throughput_rps": statistics.median(r["bare"]["throughput_rps"] for r in rounds),
        "throughput_ratio": ratio,
        f"polling_{polling['rate_rps']:.0f}rps": {
            "gateway_p50_ms": polling["gateway"]["p50_ms"],
            "gateway_p99_ms": polling["gateway"]["p99_ms"],
            "bare_p99_ms": polling["bare"]["p99_ms"],
        },
        f"half_bare_{half['rate_rps']:.0f}rps": {
            "gateway_p50_ms": half["gateway"]["p50_ms"],
            "gateway_p99_ms": half["gateway"]["p99_ms"],
            "bare_p99_ms": half["bare"]["p99_ms"],
        },
        "p99_target_met_at_polling_load": polling["gateway"]["p99_ms"] <= P99_TARGET_MS,
        "throughput_target_met": ratio >= 0.5,
    }
    return {"summary": summary, "cpus": os.cpu_count(), "rounds": rounds, "paced": paced}


if __name__ == "__main__":
    main()
