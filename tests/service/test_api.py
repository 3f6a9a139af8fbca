"""The gateway over real HTTP on loopback, with a real Redis and no worker: every 4xx path,
authentication and tenant isolation, idempotency, SSE resume and comparisons. Where a test
needs progress, it drives the session through the store exactly as a worker does."""

import asyncio
import json
import urllib.error
import urllib.request

import httpx
import pytest
from redis.asyncio import Redis

from sdpo.schemas import AttemptPublic, Solution, StepPublic
from sdpo.settings import Settings
from sdpo.store import Claim, JobQueue, StepCommit, Store, WorkerSlots, session_keys
from sdpo_serve.embedded import free_port

from .conftest import KEY_A, KEY_B, comparison, gateway_in_thread, problem


@pytest.fixture(scope="module")
def gateway(redis_server):
    settings = Settings(
        redis_url=redis_server.url,
        api_keys=f"{KEY_A},{KEY_B}",
        quota_active_sessions=4,
        max_queue=6,
        max_body_bytes=65_536,
    )
    with gateway_in_thread(settings) as url:
        yield url


@pytest.fixture
def alice(gateway, redis_url):
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {KEY_A}"}) as client:
        yield client


@pytest.fixture
def bob(gateway, redis_url):
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {KEY_B}"}) as client:
        yield client


@pytest.fixture
async def store(redis_url):
    redis = Redis.from_url(redis_url, decode_responses=True)
    yield Store(redis)
    await redis.aclose()


class Driver:
    """Moves a session on through the store, the way a worker does."""

    def __init__(self, store: Store) -> None:
        self.store, self.queue = store, JobQueue(store.redis)

    async def claim(self, sid: str) -> Claim:
        await self.queue.ensure_group()
        while (job := await self.queue.read("test-worker", 100)) is not None:
            if job.session_id == sid:
                return await self.store.claim(sid, job.id, "test-worker")
        raise AssertionError(f"no job for {sid}")

    async def step(self, claim: Claim, step: int, passed: bool = False) -> None:
        first = step * 2 + 1
        attempts = [
            AttemptPublic(index=i, step=step, text=f"t{i}", passed=passed, verdict="accepted"
                          if passed else "wrong_answer")
            for i in (first, first + 1)
        ]  # fmt: skip
        record = StepPublic(
            step=step, attempts=2, attempts_used=first + 1, pass_count=2 * passed, elapsed_s=0.5
        )
        solution = Solution(attempt=first, text=f"t{first}") if passed else None
        await self.store.commit_step(
            StepCommit(claim.state.id, claim.state.lease, record, attempts, solution)
        )


def _fields(response: httpx.Response) -> list[str]:
    return [f["field"] for f in response.json()["fields"]]


def test_health_needs_no_key_and_ready_needs_a_worker(gateway, redis_url):
    assert httpx.get(f"{gateway}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway}/readyz")
    assert ready.status_code == 503 and ready.json() == {
        "ready": False,
        "redis": True,
        "workers": 0,
        "sessions_running": 0,
        "free_slots": 0,
        "memory_reserved_bytes": 0,
        "memory_budget_bytes": 0,
    }
    assert "sdpo_queue_depth" in httpx.get(f"{gateway}/metrics").text


async def test_ready_and_metrics_count_each_workers_sessions_and_free_slots(gateway, store):
    """Workers say in their heartbeat how many sessions they run of how many they may, and
    how much of their memory budget the sessions reserved."""
    await store.heartbeat("w1", WorkerSlots(3, 8, 3_000, 10_000))
    await store.heartbeat("w2", WorkerSlots(4, 4, 8_000, 8_000))
    await store.record_queue_wait(0.3)
    await store.record_queue_wait(20.0)
    ready = httpx.get(f"{gateway}/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "ready": True,
        "redis": True,
        "workers": 2,
        "sessions_running": 7,
        "free_slots": 5,
        "memory_reserved_bytes": 11_000,
        "memory_budget_bytes": 18_000,
    }
    metrics = httpx.get(f"{gateway}/metrics").text
    assert 'sdpo_worker_sessions{worker="w1"} 3.0' in metrics
    assert 'sdpo_worker_free_slots{worker="w1"} 5.0' in metrics
    assert 'sdpo_worker_free_slots{worker="w2"} 0.0' in metrics
    assert 'sdpo_worker_memory_reserved_bytes{worker="w2"} 8000.0' in metrics
    assert 'sdpo_worker_memory_budget_bytes{worker="w1"} 10000.0' in metrics
    assert 'sdpo_queue_wait_seconds_bucket{le="0.5"} 1.0' in metrics
    assert 'sdpo_queue_wait_seconds_bucket{le="30.0"} 2.0' in metrics
    assert "sdpo_queue_wait_seconds_count 2.0" in metrics
    await store.forget_worker("w1")
    assert httpx.get(f"{gateway}/readyz").json()["free_slots"] == 0


def test_a_session_is_created_read_listed_and_paged(alice):
    created = alice.post("/v1/problems", json=problem(seed=3))
    assert created.status_code == 202, created.text
    body = created.json()
    assert created.headers["location"] == f"/v1/problems/{body['id']}"
    assert (body["status"], body["seed"], body["attempts_used"]) == ("queued", 3, 0)
    assert body["params"]["num_generations"] == 2  # as asked; a worker fills in the rest
    assert alice.get(f"/v1/problems/{body['id']}").json() == body
    listing = alice.get("/v1/problems", params={"limit": 1}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == body["id"]
    attempts = alice.get(f"/v1/problems/{body['id']}/attempts").json()
    assert attempts == {"items": [], "total": 0, "offset": 0, "limit": 50}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-key"}, {"Authorization": f"Basic {KEY_A}"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_a_missing_or_wrong_key_is_401(gateway, redis_url, headers):
    for method, path in [
        ("GET", "/v1/problems"),
        ("POST", "/v1/problems"),
        ("GET", "/v1/compare/x"),
    ]:
        response = httpx.request(method, f"{gateway}{path}", headers=headers, json=problem())
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"


def test_a_tenant_never_sees_another_tenants_sessions(alice, bob):
    sid = alice.post("/v1/problems", json=problem()).json()["id"]
    cid = alice.post("/v1/compare", json=comparison()).json()["id"]
    for path in [f"/v1/problems/{sid}", f"/v1/problems/{sid}/attempts", f"/v1/compare/{cid}"]:
        assert bob.get(path).status_code == 404 and alice.get(path).status_code == 200
    assert bob.get(f"/v1/problems/{sid}/events").status_code == 404
    assert bob.post(f"/v1/problems/{sid}/cancel").status_code == 404
    assert bob.get("/v1/problems").json()["total"] == 0
    assert alice.get(f"/v1/problems/{sid}").json()["status"] == "queued"  # bob's cancel: no effect


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"strategy": "beam"}, "strategy"),
        ({"budget": {"max_attempts": 10**6}}, "budget.max_attempts"),
        ({"params": {"learning_rate": -1}}, "params.learning_rate"),
        ({"params": {"no_such_knob": 1}}, "params.no_such_knob"),
        ({"verifier": {"type": "io_tests", "tests": [{"input": "1"}]}}, "verifier.tests[0].output"),
        ({"verifier": {"type": "function_tests", "entry_point": "1x", "tests": [{"expected": 1}]}},
         "verifier.entry_point"),
        ({"verifier": {"type": "checker"}}, "verifier.code"),
        ({"verifier": {"type": "io_tests", "tests": [{"output": "1"}] * 501}}, "verifier.tests"),
        ({"model": "gpt-9"}, "model"),
        ({"extra": True}, "extra"),
    ],
)  # fmt: skip
def test_validation_errors_are_422_naming_the_field(alice, change, field):
    response = alice.post("/v1/problems", json={**problem(), **change})
    assert response.status_code == 422, response.text
    assert field in _fields(response) and response.json()["error"] == "validation_error"
    assert field in response.json()["message"]


def test_malformed_requests_are_4xx_naming_the_part(alice):
    response = alice.post(
        "/v1/problems", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and _fields(response) == ["body"]
    response = alice.get("/v1/problems", params={"limit": 0, "offset": -1})
    assert response.status_code == 422 and set(_fields(response)) == {"query.limit", "query.offset"}
    response = alice.post("/v1/problems", json=problem(), headers={"Idempotency-Key": "a b"})
    assert response.status_code == 422 and _fields(response) == ["header.idempotency-key"]
    sid = alice.post("/v1/problems", json=problem()).json()["id"]
    response = alice.get(f"/v1/problems/{sid}/events", headers={"Last-Event-ID": "x"})
    assert response.status_code == 422 and _fields(response) == ["header.Last-Event-ID"]
    assert alice.delete(f"/v1/problems/{sid}").status_code == 405


def test_unknown_ids_are_404(alice):
    for path in ["/v1/problems/nope", "/v1/problems/" + "x" * 500, "/v1/compare/nope",
                 "/v1/problems/nope/attempts", "/v1/problems/nope/events"]:  # fmt: skip
        response = alice.get(path)
        assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert alice.post("/v1/problems/nope/cancel").status_code == 404


def test_oversized_bodies_are_413(alice):
    big = problem(prompt="x" * 70_000)
    response = alice.post("/v1/problems", json=big)
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    response = alice.post(
        "/v1/problems", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert alice.get("/v1/problems").status_code == 200  # the server is fine afterwards


def test_full_queue_and_spent_quota_are_429_with_retry_after(alice, bob):
    for _ in range(4):
        assert alice.post("/v1/problems", json=problem()).status_code == 202
    quota = alice.post("/v1/problems", json=problem())
    assert quota.status_code == 429 and quota.headers["retry-after"] == "5"
    assert "too many" in quota.json()["message"]
    assert bob.post("/v1/problems", json=problem()).status_code == 202
    assert bob.post("/v1/compare", json=comparison()).status_code == 429  # 2 more: > 6
    assert bob.post("/v1/problems", json=problem()).status_code == 202
    full = bob.post("/v1/problems", json=problem())
    assert full.status_code == 429 and "queue is full" in full.json()["message"]
    assert full.headers["retry-after"] == "5"


def test_idempotency_key_returns_the_same_session(alice, bob):
    headers = {"Idempotency-Key": "order-42"}
    first = alice.post("/v1/problems", json=problem(), headers=headers)
    again = alice.post("/v1/problems", json=problem(), headers=headers)
    assert first.json()["id"] == again.json()["id"] and again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert alice.get("/v1/problems").json()["total"] == 1
    other = alice.post("/v1/problems", json=problem(seed=9), headers=headers)
    assert other.status_code == 409 and _fields(other) == ["Idempotency-Key"]
    assert alice.post("/v1/best-of-k", json=problem(), headers=headers).status_code == 409
    assert (
        bob.post("/v1/problems", json=problem(), headers=headers).json()["id"] != first.json()["id"]
    )
    compare = [
        alice.post("/v1/compare", json=comparison(), headers={"Idempotency-Key": "c"}) for _ in "ab"
    ]
    assert compare[0].json()["id"] == compare[1].json()["id"]


def test_best_of_k_is_the_baseline_alone(alice):
    response = alice.post("/v1/best-of-k", json=problem())
    assert response.status_code == 202 and response.json()["strategy"] == "best_of_k"
    assert "teacher_model_kind" not in response.json()["params"]
    bad = alice.post("/v1/best-of-k", json={**problem(), "params": {"lora_rank": 8}})
    assert bad.status_code == 422 and _fields(bad) == ["params.lora_rank"]
    bad = alice.post("/v1/best-of-k", json={**problem(), "strategy": "sdpo"})
    assert bad.status_code == 422 and _fields(bad) == ["strategy"]


async def test_cancel_a_queued_session_and_not_a_solved_one(alice, store):
    sid = alice.post("/v1/problems", json=problem()).json()["id"]
    cancelled = alice.post(f"/v1/problems/{sid}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert alice.post(f"/v1/problems/{sid}/cancel").status_code == 202  # idempotent
    solved = alice.post("/v1/problems", json=problem()).json()["id"]
    driver = Driver(store)
    claim = await driver.claim(solved)
    await driver.step(claim, 0, passed=True)
    await store.finish(solved, claim.state.lease, "solved")
    conflict = alice.post(f"/v1/problems/{solved}/cancel")
    assert conflict.status_code == 409 and "already solved" in conflict.json()["message"]


def test_the_list_filters_by_status_and_shows_budget_and_comparison(alice):
    queued = [alice.post("/v1/problems", json=problem(seed=s)).json()["id"] for s in range(2)]
    cancelled = alice.post("/v1/problems", json=problem()).json()["id"]
    alice.post(f"/v1/problems/{cancelled}/cancel")
    compared = alice.post("/v1/compare", json=comparison(repeats=1)).json()
    by_status = {
        status: alice.get("/v1/problems", params={"status": status}).json()
        for status in ("queued", "cancelled", "solved")
    }
    queued_ids = [item["id"] for item in by_status["queued"]["items"]]
    runs = [run["session_id"] for s in compared["strategies"] for run in s["runs"]]
    assert set(queued_ids) == {*queued, *runs} and by_status["queued"]["total"] == 4
    assert [i["id"] for i in by_status["cancelled"]["items"]] == [cancelled]
    assert by_status["solved"] == {"items": [], "total": 0, "offset": 0, "limit": 20}
    both = alice.get("/v1/problems", params=[("status", "queued"), ("status", "cancelled")])
    assert both.json()["total"] == 5
    paged = alice.get("/v1/problems", params={"status": "queued", "offset": 3, "limit": 2})
    assert [i["id"] for i in paged.json()["items"]] == queued_ids[3:]
    items = {i["id"]: i for i in alice.get("/v1/problems").json()["items"]}
    assert items[cancelled]["max_attempts"] == 6 and items[cancelled]["compare_id"] is None
    assert {items[r]["compare_id"] for r in runs} == {compared["id"]}
    bad = alice.get("/v1/problems", params={"status": "done"})
    assert bad.status_code == 422 and _fields(bad) == ["query.status[0]"]


async def test_events_stream_live_and_resume_after_last_event_id(gateway, alice, store):
    sid = alice.post("/v1/problems", json=problem()).json()["id"]
    driver = Driver(store)
    headers = {"Authorization": f"Bearer {KEY_A}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=10) as client:
        async with client.stream("GET", f"/v1/problems/{sid}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            claim = await driver.claim(sid)
            for step in range(3):
                await driver.step(claim, step)
            await store.finish(sid, claim.state.lease, "exhausted")
            live = [line async for line in lines]
    events = _parse(live)
    assert [e["event"] for e in events] == ["status", "status", "step", "step", "step", "end"]
    assert json.loads(events[-1]["data"]) == {
        "status": "exhausted",
        "attempts_used": 6,
        "error": "",
    }
    resumed = alice.get(f"/v1/problems/{sid}/events", headers={"Last-Event-ID": events[3]["id"]})
    assert _parse(resumed.text.splitlines()) == events[4:]
    assert _parse(alice.get(f"/v1/problems/{sid}/events").text.splitlines()) == events
    steps = alice.get(f"/v1/problems/{sid}").json()["steps"]
    assert [json.loads(e["data"]) for e in events[2:5]] == steps


def _parse(lines: list[str]) -> list[dict]:
    events, current = [], {}
    for line in lines:
        if not line.strip():
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value.rstrip("\r")
    return events + ([current] if current else [])


async def test_compare_shows_strategies_side_by_side(alice, store):
    created = alice.post("/v1/compare", json=comparison(repeats=2, budget={"max_attempts": 4}))
    assert created.status_code == 202, created.text
    view = created.json()
    assert view["status"] == "queued" and [s["strategy"] for s in view["strategies"]] == [
        "sdpo", "best_of_k"
    ]  # fmt: skip
    runs = {s["strategy"]: s["runs"] for s in view["strategies"]}
    assert [r["seed"] for r in runs["sdpo"]] == [0, 1]
    driver = Driver(store)
    for run, solved_at in zip(runs["sdpo"], [0, 1], strict=True):
        claim = await driver.claim(run["session_id"])
        for step in range(solved_at + 1):
            await driver.step(claim, step, passed=step == solved_at)
        await store.finish(run["session_id"], claim.state.lease, "solved")
    view = alice.get(f"/v1/compare/{view['id']}").json()
    sdpo = next(s for s in view["strategies"] if s["strategy"] == "sdpo")
    assert view["status"] == "running" and sdpo["solved_rate"] == 1.0
    assert sdpo["mean_attempts_to_success"] == 2.0 and sdpo["mean_seconds_to_success"] == 0.5
    assert sdpo["discovery"] == [
        {"k": 1, "rate": 0.5},
        {"k": 3, "rate": 1.0},
        {"k": 4, "rate": 1.0},
    ]
    best = next(s for s in view["strategies"] if s["strategy"] == "best_of_k")
    assert best["solved_rate"] == 0.0 and best["discovery"] == [{"k": 4, "rate": 0.0}]


def test_openapi_documents_every_endpoint(gateway):
    schema = httpx.get(f"{gateway}/openapi.json").json()
    assert set(schema["paths"]) == {
        "/v1/problems", "/v1/problems/{problem_id}", "/v1/problems/{problem_id}/attempts",
        "/v1/problems/{problem_id}/events", "/v1/problems/{problem_id}/cancel", "/v1/best-of-k",
        "/v1/compare", "/v1/compare/{compare_id}", "/healthz", "/readyz", "/metrics",
    }  # fmt: skip
    create = schema["paths"]["/v1/problems"]["post"]
    assert {"202", "401", "409", "413", "422", "429"} <= set(create["responses"])


def test_redis_down_is_503_with_retry_after():
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with gateway_in_thread(settings) as url:
        response = httpx.get(f"{url}/v1/problems")
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] is False


async def test_a_replay_after_its_session_expired_is_409_naming_the_key(alice, store):
    headers = {"Idempotency-Key": "order-expired"}
    first = alice.post("/v1/problems", json=problem(), headers=headers)
    await store.redis.delete(*session_keys(first.json()["id"]))  # its expiry came first
    again = alice.post("/v1/problems", json=problem(), headers=headers)
    assert again.status_code == 409 and _fields(again) == ["Idempotency-Key"]
    assert "expired" in again.json()["message"]


async def test_parallel_posts_never_pass_the_quota(gateway, redis_url):
    """50 POSTs at once against a quota of 4: admission checks and reserves in one step."""
    headers = {"Authorization": f"Bearer {KEY_A}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as client:
        posts = [client.post("/v1/problems", json=problem()) for _ in range(50)]
        statuses = sorted(r.status_code for r in await asyncio.gather(*posts))
    assert statuses == [202] * 4 + [429] * 46


BIG_BODY = b"x" * (30 * 1024 * 1024)


def test_a_client_sending_30_mb_reads_the_413(alice, gateway):
    """Python clients send the whole body before they read an answer (no Expect:
    100-continue): a server that answers early and closes resets them mid-send."""
    response = alice.post(
        "/v1/problems", content=BIG_BODY, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and _fields(response) == ["body"]
    request = urllib.request.Request(
        f"{gateway}/v1/problems",
        data=BIG_BODY,
        headers={"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"] == "body_too_large"
    refused.value.close()


@pytest.fixture(scope="module")
def limited(redis_server):
    settings = Settings(
        redis_url=redis_server.url,
        api_keys=f"{KEY_A},{KEY_B}",
        max_wall_s_limit=600,
        num_generations_limit=16,
        max_completion_length_limit=512,
        event_streams_per_tenant=2,
    )
    with gateway_in_thread(settings) as url:
        yield url


@pytest.mark.parametrize(
    ("change", "field", "limit"),
    [
        ({"budget": {"max_wall_s": 601}}, "budget.max_wall_s", "600"),
        ({"params": {"num_generations": 17}}, "params.num_generations", "16"),
        ({"params": {"max_completion_length": 513}}, "params.max_completion_length", "512"),
    ],
)
def test_requests_over_the_servers_limits_are_422_naming_field_and_limit(
    limited, redis_url, change, field, limit
):
    headers = {"Authorization": f"Bearer {KEY_A}"}
    response = httpx.post(f"{limited}/v1/problems", json=problem(**change), headers=headers)
    assert response.status_code == 422 and _fields(response) == [field]
    assert limit in response.json()["message"]
    strategy = "best_of_k" if field.startswith("params") else "sdpo"
    over = comparison(**change) if field.startswith("budget") else comparison()
    if field.startswith("params"):
        over["params"][strategy] = {**over["params"][strategy], **change["params"]}
    response = httpx.post(f"{limited}/v1/compare", json=over, headers=headers)
    expected = f"params.{strategy}.{field.split('.')[1]}" if field.startswith("params") else field
    assert response.status_code == 422 and _fields(response) == [expected]


def test_a_session_without_a_wall_budget_gets_the_servers_limit(limited, redis_url):
    headers = {"Authorization": f"Bearer {KEY_A}"}
    created = httpx.post(f"{limited}/v1/problems", json=problem(), headers=headers)
    assert created.status_code == 202 and created.json()["budget"]["max_wall_s"] == 600


async def test_open_event_streams_are_limited_per_tenant(limited, redis_url):
    headers = {"Authorization": f"Bearer {KEY_A}"}
    async with httpx.AsyncClient(base_url=limited, headers=headers, timeout=10) as alice:
        sid = (await alice.post("/v1/problems", json=problem())).json()["id"]
        url = f"/v1/problems/{sid}/events"
        async with alice.stream("GET", url) as first, alice.stream("GET", url) as second:
            assert first.status_code == second.status_code == 200
            third = await alice.get(url)
            assert third.status_code == 429 and _fields(third) == ["events"]
            assert "2 open event streams" in third.json()["message"]
            assert third.headers["retry-after"]
        for _ in range(50):  # a closed stream gives its place back
            async with alice.stream("GET", url) as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert again.status_code == 200
