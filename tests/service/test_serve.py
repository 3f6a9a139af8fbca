"""`sdpo serve` as a user runs it: embedded Redis, gateway and a worker from one command; Ctrl-C
stops them all and hands the running session back; the next `sdpo serve` on the same data
folder carries it on."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from sdpo.client import SdpoClient
from sdpo.store import WORKERS_KEY, jobs_key, session_key
from sdpo_serve.embedded import EmbeddedRedis

from .conftest import REPO, WORKER_ENV, Serve, child_env, problem, wait_until

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_serve_runs_everything_and_ctrl_c_stops_it_cleanly(tmp_path, tiny_model_dir, started):
    env = child_env("", SDPO_MODEL=str(tiny_model_dir), **WORKER_ENV)
    env.pop("SDPO_REDIS_URL")
    data = tmp_path / "data"
    serve = Serve(data, env, tmp_path / "serve.log")
    started.append(serve.process)
    body = tmp_path / "problem.json"
    body.write_text(json.dumps(problem(passes=True)))
    submitted = subprocess.run(
        [sys.executable, "-m", "sdpo_serve.cli", "submit", str(body), "--wait",
         "--api-url", serve.url],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert submitted.returncode == 0 and "solved" in submitted.stdout, submitted.stderr
    with SdpoClient(serve.url) as client:
        long = client.create_problem(problem(budget={"max_attempts": 2000})).id
        wait_until(lambda: len(client.get_problem(long).steps) >= 2, 60, "two steps")
    with redis.Redis.from_url(serve.redis_url(), decode_responses=True) as r:
        workers = [int(name.rsplit("-", 1)[1]) for name in r.zrange(WORKERS_KEY, 0, -1)]
        redis_pid = r.info("server")["process_id"]
    assert serve.stop(signal.SIGINT) == 0
    assert not any(_alive(pid) for pid in [*workers, redis_pid])
    assert "stopped" in serve.log.read_text()

    with EmbeddedRedis(data / "redis") as server, redis.Redis.from_url(server.url) as r:
        state = {k.decode(): v.decode() for k, v in r.hgetall(session_key(long)).items()}
        jobs = r.xrange(jobs_key("default"))
    assert state["status"] == "queued" and int(state["steps"]) >= 2  # handed back, kept
    assert [fields[b"session"].decode() for _, fields in jobs] == [long]

    serve = Serve(data, env, tmp_path / "serve-again.log")
    started.append(serve.process)
    with SdpoClient(serve.url) as client:
        resumed = wait_until(
            lambda: (
                (p := client.get_problem(long)).status == "running"
                and len(p.steps) > int(state["steps"])
                and p
            ),
            60,
            "resumed session",
        )
        client.cancel(long)
        final = client.wait(long)
    assert resumed.resumed == 1  # handed to the next worker once
    assert final.status == "cancelled" and final.attempts_used == len(final.steps) * 2
    assert [s.step for s in final.steps] == list(range(len(final.steps)))
    assert serve.stop(signal.SIGTERM) == 0
