"""End to end with real processes: a gateway process, two worker processes (the tiny random
Llama on the CPU, the real sandbox) and a real Redis with AOF. Sessions live and die, the CLI
drives them, and the gateway, Redis and a worker are restarted or killed mid-session."""

import json
import os
import signal

import httpx
import pytest
import redis
from typer.testing import CliRunner

from sdpo.client import ApiError, SdpoClient
from sdpo.store import session_key
from sdpo_serve.cli import app as cli
from sdpo_serve.embedded import EmbeddedRedis

from .conftest import WORKER_ENV, Cluster, child_env, comparison, problem, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("cluster")
    server = EmbeddedRedis(folder / "redis").start()
    env = child_env(
        server.url,
        SDPO_MODEL=str(tiny_model_dir),
        SDPO_CHECKPOINT_DIR=str(folder / "checkpoints"),
        SDPO_WORKER_MAX_SESSIONS="8",
        # sessions sampled and updated one by one: a resumed SDPO session can then be compared
        # bit for bit with a reference run beside other sessions (co-batched rows differ in
        # float rounding)
        SDPO_WORKER_BATCH_GENERATION="false",
        SDPO_WORKER_BATCH_UPDATE="false",
        **WORKER_ENV,
    )
    cluster = Cluster(server.url, env, log_dir=folder)
    try:
        cluster.start_gateway()
        cluster.start_worker()
        cluster.start_worker()
        cluster.wait_workers(2)
        yield cluster, server
    finally:
        cluster.stop()
        server.stop()


@pytest.fixture
def client(cluster):
    with SdpoClient(cluster[0].url, timeout_s=10) as client:
        yield client


def _finished(client: SdpoClient, sid: str, timeout_s: float = 60):
    return wait_until(
        lambda: (p := _get(client, sid)) is not None and p.status in TERMINAL and p,
        timeout_s,
        f"session {sid} finished",
    )


def _get(client: SdpoClient, sid: str):
    try:
        return client.get_problem(sid)
    except (httpx.TransportError, ApiError):  # the gateway or Redis is being restarted
        return None


TERMINAL = {"solved", "exhausted", "failed", "cancelled"}


def _steps_at_least(client: SdpoClient, sid: str, steps: int, timeout_s: float = 30):
    wait_until(
        lambda: (p := _get(client, sid)) is not None and len(p.steps) >= steps,
        timeout_s,
        f"{steps} steps of {sid}",
    )


def _assert_exact(client: SdpoClient, sid: str, max_attempts: int):
    """Every attempt once, in order, within the budget; steps account for all of them."""
    final = client.get_problem(sid)
    attempts = client.attempts(sid, limit=500)
    assert final.attempts_used == attempts.total == max_attempts
    assert [a.index for a in attempts.items] == list(range(1, max_attempts + 1))
    assert [s.step for s in final.steps] == list(range(len(final.steps)))
    assert sum(s.attempts for s in final.steps) == max_attempts
    assert final.steps[-1].attempts_used == max_attempts
    return final, attempts


@pytest.mark.parametrize("strategy", ["sdpo", "best_of_k", "multi_turn"])
def test_a_session_is_solved_and_its_events_tell_the_story(client, strategy):
    sid = client.create_problem(problem(passes=True, strategy=strategy)).id
    events = list(client.events(sid))
    final = _finished(client, sid)
    assert (final.status, final.first_success_attempt, final.error) == ("solved", 1, None)
    first = client.attempts(sid).items[0]
    assert final.solution.text == first.text and first.passed and first.verdict == "accepted"
    assert final.started_at <= final.finished_at and final.first_success_s > 0
    assert [e.type for e in events][-2:] == ["step", "end"]
    assert json.loads(events[-1].data)["status"] == "solved"


def test_budgets_hold_exactly(client):
    by_attempts = client.create_problem(problem(budget={"max_attempts": 5})).id
    by_time = client.create_problem(problem(budget={"max_attempts": 10_000, "max_wall_s": 1.0}))
    _finished(client, by_attempts)
    final, _ = _assert_exact(client, by_attempts, 5)
    assert final.status == "exhausted" and [s.attempts for s in final.steps] == [2, 2, 1]
    timed = _finished(client, by_time.id)
    assert timed.status == "exhausted" and 0 < timed.attempts_used < 10_000
    ran_s = (timed.finished_at - timed.started_at).total_seconds()
    assert 1.0 <= ran_s < 5.0  # stops at the first phase boundary past the limit
    assert timed.attempts_used == client.attempts(by_time.id).total


def test_cancel_stops_a_running_session_between_phases(client):
    sid = client.create_problem(problem(budget={"max_attempts": 5000})).id
    _steps_at_least(client, sid, 1)
    cancelled = client.cancel(sid)
    assert cancelled.cancel_requested and cancelled.status in ("running", "cancelled")
    final = _finished(client, sid)
    assert final.status == "cancelled" and final.attempts_used < 5000
    assert client.attempts(sid, limit=1).total == final.attempts_used


def test_a_broken_verifier_fails_the_session_with_its_message(client):
    broken = {"type": "checker", "mode": "answer", "code": "def check(output):\n    return 1/0\n"}
    final = _finished(client, client.create_problem(problem(verifier=broken)).id)
    assert final.status == "failed" and "verifier" in final.error and final.attempts_used == 0


def test_a_prompt_longer_than_the_models_context_fails_naming_it(client):
    too_long = "Write f(xs) that adds one to each element. " * 200  # over 1024 tokens
    final = _finished(client, client.create_problem(problem(prompt=too_long)).id)
    assert final.status == "failed" and final.attempts_used == 0
    assert "prompt:" in final.error and "exceed the model's context of 1024 tokens" in final.error


def test_cli_submit_status_and_compare(cluster, tmp_path):
    url = cluster[0].url
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(problem(passes=True)))
    runner = CliRunner()
    submitted = runner.invoke(cli, ["submit", str(path), "--wait", "--api-url", url])
    assert submitted.exit_code == 0, submitted.output
    sid = submitted.output.splitlines()[0]
    shown = runner.invoke(cli, ["status", sid, "--api-url", url])
    assert shown.exit_code == 0 and "solved" in shown.output and "solution" in shown.output
    path.write_text(json.dumps(comparison(passes=True)))
    compared = runner.invoke(cli, ["compare", str(path), "--repeats", "2", "--api-url", url])
    assert compared.exit_code == 0, compared.output
    assert "sdpo" in compared.output and "best_of_k" in compared.output
    assert compared.output.count("100%") == 2  # both strategies solved every run
    missing = runner.invoke(cli, ["status", "nope", "--api-url", url])
    assert missing.exit_code == 1 and "404" in missing.output


def test_gateway_restart_while_sessions_run(cluster, client):
    """Sessions keep running without a gateway; the SSE stream resumes after the restart with
    Last-Event-ID, with no event lost or repeated."""
    gateway = cluster[0]
    sid = client.create_problem(problem(budget={"max_attempts": 40})).id
    seen, stream = [], client.events(sid)
    for event in stream:
        seen.append(event)
        if event.type == "step":
            break
    gateway.gateway.kill()
    gateway.gateway.wait()
    stream.close()
    _steps_at_least_in_redis(gateway.redis_url, sid, 5)  # the worker carried on alone
    gateway.start_gateway()
    seen += list(client.events(sid, last_event_id=seen[-1].id))
    final = _finished(client, sid)
    assert final.status == "exhausted"
    steps = [json.loads(e.data)["step"] for e in seen if e.type == "step"]
    assert steps == list(range(len(final.steps))) and seen[-1].type == "end"
    _assert_exact(client, sid, 40)


def _steps_at_least_in_redis(url: str, sid: str, steps: int) -> None:
    with redis.Redis.from_url(url, decode_responses=True) as r:
        wait_until(lambda: int(r.hget(session_key(sid), "steps") or 0) >= steps, 30, "steps")


def test_redis_restart_keeps_sessions(cluster, client):
    """Redis crashes (SIGKILL) mid-session and comes back from its AOF: the finished session is
    intact, and the running one carries on with exact counts."""
    gateway, server = cluster
    done = client.create_problem(problem(passes=True)).id
    before = _finished(client, done)
    sid = client.create_problem(problem(budget={"max_attempts": 40})).id
    _steps_at_least(client, sid, 3)
    server.kill()
    with pytest.raises(ApiError) as down:
        client.get_problem(sid)
    assert down.value.status == 503
    server.start()  # the same port and data folder
    final = _finished(client, sid)
    assert final.status == "exhausted"
    _assert_exact(client, sid, 40)
    assert client.get_problem(done) == before
    gateway.wait_workers(2)


def test_a_killed_worker_loses_no_attempt(cluster, client):
    """SIGKILL the worker mid-session: the other one reclaims the job, resumes from the last
    committed step's checkpoint and samples exactly what an uninterrupted run samples."""
    gateway = cluster[0]
    body = problem(budget={"max_attempts": 39}, params={"num_generations": 2,
                   "max_completion_length": 8, "learning_rate": 0.05}, seed=5)  # fmt: skip
    reference = client.create_problem(body).id
    _finished(client, reference)
    sid = client.create_problem(body).id
    _steps_at_least(client, sid, 3)
    with redis.Redis.from_url(gateway.redis_url, decode_responses=True) as r:
        victim = int(r.hget(session_key(sid), "worker").rsplit("-", 1)[1])
    os.kill(victim, signal.SIGKILL)
    final = _finished(client, sid)
    assert final.status == "exhausted" and final.resumed == 1
    _, attempts = _assert_exact(client, sid, 39)
    assert [s.attempts for s in final.steps] == [2] * 19 + [1]
    expected = [a.text for a in client.attempts(reference, limit=500).items]
    assert [a.text for a in attempts.items] == expected


def test_a_killed_worker_with_eight_sessions_has_all_eight_resumed(cluster, client):
    """One worker runs 8 sessions of all three strategies at once (it is the only worker, so it
    claims them all). SIGKILL it: a new worker reclaims every session, and each ends with
    exactly the attempts that an uninterrupted run of it samples."""
    gateway = cluster[0]
    for worker in gateway.workers:  # the others stop cleanly: they run nothing now
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(20)
    runner = gateway.start_worker()
    strategies = ["sdpo", "best_of_k", "multi_turn"]
    params = {"num_generations": 2, "max_completion_length": 8}
    bodies = [
        problem(budget={"max_attempts": 40}, strategy=strategies[i % 3], seed=100 + i,
                params=params if i % 3 else {**params, "learning_rate": 0.05})
        for i in range(8)
    ]  # fmt: skip
    sids = [client.create_problem(body).id for body in bodies]
    for sid in sids:
        _steps_at_least(client, sid, 1, timeout_s=90)
    with redis.Redis.from_url(gateway.redis_url, decode_responses=True) as r:
        holders = {r.hget(session_key(sid), "worker") for sid in sids}
    assert len(holders) == 1 and holders.pop().endswith(f"-{runner.pid}")
    assert all(client.get_problem(sid).status == "running" for sid in sids)
    runner.kill()
    runner.wait()
    gateway.start_worker()
    references = [client.create_problem(body).id for body in bodies]
    for sid, reference, body in zip(sids, references, bodies, strict=True):
        final = _finished(client, sid, timeout_s=180)
        assert (final.status, final.resumed) == ("exhausted", 1), body["strategy"]
        _, attempts = _assert_exact(client, sid, 40)
        _finished(client, reference, timeout_s=180)
        expected = [a.text for a in client.attempts(reference, limit=500).items]
        assert [a.text for a in attempts.items] == expected, body["strategy"]
