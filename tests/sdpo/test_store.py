"""The store and queue against a real Redis: step commits happen once, in order, within the
budget and only under the current lease; cancellation, release, idempotency and admission."""

import asyncio
import json

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from sdpo.schemas import AttemptPublic, Budget, ProblemCreate, Solution, StepPublic
from sdpo.store import (
    Claim,
    CommitResult,
    CreateRequest,
    IdempotencyConflict,
    Job,
    JobQueue,
    QueueFull,
    QuotaExceeded,
    StepCommit,
    Store,
    StoreConfig,
    events_key,
    idempotency_key,
    owner_active_key,
    owner_sessions_key,
    session_key,
    session_keys,
)

PROBLEM = ProblemCreate(
    prompt="Print 4.",
    verifier={"type": "io_tests", "tests": [{"input": "", "output": "4"}]},
    budget={"max_attempts": 5},
    params={"num_generations": 2},
)


@pytest.fixture
async def redis(redis_url):
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis):
    return Store(redis, StoreConfig(max_queue=6, quota_active_sessions=4, events_maxlen=50))


@pytest.fixture
async def queue(redis):
    queue = JobQueue(redis)
    await queue.ensure_group()
    return queue


async def _create(store, owner="alice", problem=PROBLEM, key=None):
    return (await store.create(CreateRequest(owner, [problem], idempotency_key=key))).ids[0]


async def _claim(store, queue, consumer="w1") -> Claim:
    job = await queue.read(consumer, block_ms=100)
    claim = await store.claim(job.session_id, job.id, consumer)
    assert isinstance(claim, Claim)
    return claim


def _step(step: int, before: int, n: int, passed: int | None = None) -> tuple:
    attempts = [
        AttemptPublic(
            index=before + i + 1, step=step, text=f"a{before + i + 1}", passed=passed == i,
            verdict="accepted" if passed == i else "wrong_answer",
        )
        for i in range(n)
    ]  # fmt: skip
    record = StepPublic(
        step=step, attempts=n, attempts_used=before + n, pass_count=int(passed is not None),
        elapsed_s=1.5,
    )  # fmt: skip
    return record, attempts


def _commit(claim: Claim, step: int, before: int, n: int, lease: str | None = None) -> StepCommit:
    record, attempts = _step(step, before, n)
    return StepCommit(claim.state.id, lease or claim.state.lease, record, attempts)


def test_every_key_of_a_session_is_in_one_cluster_slot():
    assert len({key_slot(k.encode()) for k in session_keys("abc123")}) == 1
    owner = [owner_sessions_key("t"), owner_active_key("t"), idempotency_key("t", "k")]
    assert len({key_slot(k.encode()) for k in owner}) == 1


async def test_create_queues_a_session_and_its_job(store, queue):
    sid = await _create(store)
    state, steps = await store.snapshot(sid)
    assert (state.status, state.owner, state.attempts_used, steps) == ("queued", "alice", 0, [])
    assert state.params["num_generations"] == 2 and state.budget.max_attempts == 5
    job = await queue.read("w1", block_ms=100)
    assert job.session_id == sid
    assert await store.active_sessions("alice") == 1


async def test_a_step_commits_once_in_order_within_budget_under_the_lease(store, queue):
    sid = await _create(store)
    claim = await _claim(store, queue)
    assert claim.state.status == "running" and not claim.resumed
    assert await store.commit_step(_commit(claim, 0, 0, 2)) is CommitResult.COMMITTED
    assert await store.commit_step(_commit(claim, 0, 0, 2)) is CommitResult.DUPLICATE
    assert await store.commit_step(_commit(claim, 2, 2, 2)) is CommitResult.OUT_OF_ORDER
    assert await store.commit_step(_commit(claim, 1, 2, 2, "x")) is CommitResult.LEASE_LOST
    assert await store.commit_step(_commit(claim, 1, 2, 4)) is CommitResult.OVER_BUDGET
    assert await store.commit_step(_commit(claim, 1, 1, 2)) is CommitResult.OVER_BUDGET
    assert await store.commit_step(_commit(claim, 1, 2, 3)) is CommitResult.COMMITTED
    state, steps = await store.snapshot(sid)
    attempts, total = await store.attempts(sid, 0, 100)
    assert state.attempts_used == 5 == total and [s.attempts_used for s in steps] == [2, 5]
    assert [a.index for a in attempts] == [1, 2, 3, 4, 5]


async def test_the_first_success_is_recorded_once(store, queue):
    sid = await _create(store)
    claim = await _claim(store, queue)
    record, attempts = _step(0, 0, 2, passed=1)
    solution = Solution(attempt=2, text="a2", code="print(4)")
    await store.commit_step(StepCommit(sid, claim.state.lease, record, attempts, solution))
    record, attempts = _step(1, 2, 2, passed=0)
    other = Solution(attempt=3, text="a3")
    await store.commit_step(StepCommit(sid, claim.state.lease, record, attempts, other))
    state = await store.get(sid)
    assert (state.first_success_attempt, state.first_success_s) == (2, 1.5)
    assert state.solution == {"attempt": 2, "text": "a2", "code": "print(4)"}


async def test_a_reclaimed_job_moves_the_lease_and_fences_the_old_worker(store, queue):
    sid = await _create(store)
    old = await _claim(store, queue, "w1")
    await store.commit_step(_commit(old, 0, 0, 2))
    job = await queue.reclaim("w2", min_idle_ms=0)
    assert job.session_id == sid
    new = await store.claim(sid, job.id, "w2")
    assert new.resumed and new.state.lease != old.state.lease and new.state.claims == 2
    assert (new.state.steps, new.state.attempts_used) == (1, 2)
    assert await store.commit_step(_commit(old, 1, 2, 2)) is CommitResult.LEASE_LOST
    assert not await queue.touch("w1", job) and await queue.touch("w2", job)
    assert await store.commit_step(_commit(new, 1, 2, 2)) is CommitResult.COMMITTED
    assert not await store.finish(sid, old.state.lease, "solved")
    assert await store.finish(sid, new.state.lease, "exhausted")
    assert (await store.get(sid)).status == "exhausted"


async def test_a_second_job_for_a_running_session_is_refused(store, queue):
    sid = await _create(store)
    await _claim(store, queue, "w1")
    await queue.enqueue(sid)
    job = await queue.read("w2", block_ms=100)
    assert await store.claim(sid, job.id, "w2") == "running"


async def test_cancel_ends_a_queued_session_and_flags_a_running_one(store, queue):
    queued = await _create(store)
    assert await store.cancel(queued) == "queued"
    state = await store.get(queued)
    assert state.status == "cancelled" and state.finished_at is not None
    events = await store.events(queued, "0", 0)
    assert [e.type for e in events] == ["status", "end"]
    assert json.loads(events[-1].data)["status"] == "cancelled"
    job = await queue.read("w1", block_ms=100)  # its job is dropped by the worker
    assert await store.claim(queued, job.id, "w1") == "cancelled"

    running = await _create(store)
    claim = await _claim(store, queue)
    assert await store.cancel(running) == "running"
    assert await store.cancel_requested(running)
    assert (await store.get(running)).status == "running"
    assert await store.finish(running, claim.state.lease, "cancelled")
    assert await store.cancel(running) == "cancelled"
    assert await store.cancel("nope") is None
    assert await store.active_sessions("alice") == 0


async def test_release_hands_the_session_back_to_the_queue(store, queue):
    sid = await _create(store)
    claim = await _claim(store, queue)
    await store.commit_step(_commit(claim, 0, 0, 2))
    job = _job(claim.state.job_id, sid)
    assert await store.requeue(sid, claim.state.lease, job, queue.key)
    state = await store.get(sid)
    assert (state.status, state.lease, state.attempts_used) == ("queued", None, 2)
    again = await _claim(store, queue, "w2")
    assert again.state.steps == 1 and again.state.started_at == claim.state.started_at


async def test_finish_sets_the_expiry_of_every_key(store, queue, redis):
    sid = await _create(store)
    claim = await _claim(store, queue)
    await store.commit_step(_commit(claim, 0, 0, 2))
    assert await redis.ttl(session_key(sid)) == -1
    await store.finish(sid, claim.state.lease, "exhausted")
    ttls = [await redis.ttl(key) for key in session_keys(sid)]
    assert all(0 < ttl <= store.config.session_ttl_s for ttl in ttls)


async def test_idempotency_key_replays_the_same_sessions(store, redis):
    first = await _create(store, key="k1")
    again = await store.create(CreateRequest("alice", [PROBLEM], idempotency_key="k1"))
    assert again.replayed and again.ids == [first]
    assert await _create(store, owner="bob", key="k1") != first  # keys are per caller
    other = PROBLEM.model_copy(update={"seed": 3})
    with pytest.raises(IdempotencyConflict):
        await store.create(CreateRequest("alice", [other], idempotency_key="k1"))
    racing = [
        store.create(CreateRequest("carol", [PROBLEM], idempotency_key="k2")) for _ in range(5)
    ]
    results = await asyncio.gather(*racing)
    assert len({r.ids[0] for r in results}) == 1 and sum(not r.replayed for r in results) == 1
    assert await redis.zcard(owner_sessions_key("carol")) == 1


async def test_admission_queue_full_and_quota(store, queue, redis):
    for _ in range(4):
        await _create(store, owner="alice")
    with pytest.raises(QuotaExceeded):
        await _create(store, owner="alice")
    await _create(store, owner="bob")
    await _create(store, owner="bob")
    with pytest.raises(QueueFull):
        await _create(store, owner="bob")
    # a session that ended without leaving the active set (a worker died in between) heals
    stale = next(iter(await redis.smembers(owner_active_key("alice"))))
    await redis.hset(session_key(stale), "status", "solved")
    assert await store.active_sessions("alice") == 3


async def test_list_sessions_newest_first_and_drops_expired(store, redis):
    ids = [await _create(store) for _ in range(3)]
    items, total = await store.list_sessions("alice", 0, 2)
    assert [i.id for i in items] == ids[::-1][:2] and total == 3
    await redis.delete(session_key(ids[1]))
    items, total = await store.list_sessions("alice", 0, 10)
    assert [i.id for i in items] == [ids[2], ids[0]] and total == 2


async def test_events_resume_after_an_id_and_stay_capped(store, queue, redis):
    long = PROBLEM.model_copy(update={"budget": Budget(max_attempts=300)})
    sid = await _create(store, problem=long)
    claim = await _claim(store, queue)
    events = await store.events(sid, "0", 0)
    assert [e.type for e in events] == ["status", "status"]
    assert await store.events(sid, events[0].id, 0) == events[1:]
    for step in range(300):
        assert await store.commit_step(_commit(claim, step, step, 1)) is CommitResult.COMMITTED
    stream_node = 100  # approximate trimming drops whole nodes of the stream
    assert await redis.xlen(events_key(sid)) <= store.config.events_maxlen + stream_node
    assert len((await store.snapshot(sid))[1]) == 300  # records are never trimmed


async def test_reclaim_follows_the_cursor_past_busy_consumers(queue, redis):
    """25 jobs pending, only the last one's consumer is dead: XAUTOCLAIM scans COUNT x 10
    entries per call, so a reclaim that always restarts from 0-0 never reaches it."""
    store = Store(redis, StoreConfig(max_queue=100))
    ids = [await _create(store, owner=f"t{i}") for i in range(25)]
    for i in range(24):
        await _claim(store, queue, f"busy-{i}")
    dead = await _claim(store, queue, "dead")
    await asyncio.sleep(0.3)
    for i in range(24):  # every busy worker keeps its job fresh
        assert await queue.touch(f"busy-{i}", (await _pending_job(queue, f"busy-{i}")))
    job = await queue.reclaim("w-new", min_idle_ms=200)
    assert job is not None and job.session_id == dead.state.id == ids[-1]


def _job(job_id, sid):
    return Job(id=job_id, session_id=sid)


async def _pending_job(queue, consumer):
    [entry] = await queue.redis.xpending_range(
        queue.key, "workers", min="-", max="+", count=1, consumername=consumer
    )
    fields = (await queue.redis.xrange(queue.key, entry["message_id"], entry["message_id"]))[0][1]
    return Job(id=entry["message_id"], session_id=fields["session"])


async def test_requeue_releases_and_enqueues_in_one_step(store, queue):
    sid = await _create(store)
    claim = await _claim(store, queue)
    old_job = claim.state.job_id
    assert await store.requeue(sid, claim.state.lease, _job(old_job, sid), queue.key)
    assert (await store.get(sid)).status == "queued"
    assert await queue.pending() == 0  # the old job is acknowledged in the same step
    job = await queue.read("w2", block_ms=100)
    assert job is not None and job.session_id == sid and job.id != old_job
    assert not await store.requeue(sid, "another-lease", job, queue.key)
    assert await queue.read("w3", block_ms=100) is None  # and nothing more was enqueued


async def test_scripts_are_safe_to_run_twice(store, queue, redis):
    """redis-py retries EVALSHA after a timeout, and the first run may have happened: each
    call carries its lease, so a second run with the same arguments answers the same."""
    sid = await _create(store)
    job = await queue.read("w1", block_ms=100)
    first = await store.claim(sid, job.id, "w1", lease="lease-1")
    again = await store.claim(sid, job.id, "w1", lease="lease-1")
    assert isinstance(again, Claim) and not again.resumed and not first.resumed
    assert again.state.claims == first.state.claims == 1
    assert await store.requeue(sid, "lease-1", job, queue.key)
    assert await store.requeue(sid, "lease-1", job, queue.key)
    assert await redis.xlen(queue.key) == 1  # the old job is gone, one new one
    job = await queue.read("w2", block_ms=100)
    await store.claim(sid, job.id, "w2", lease="lease-2")
    assert await store.finish(sid, "lease-2", "exhausted")
    assert await store.finish(sid, "lease-2", "exhausted")
    assert not await store.finish(sid, "lease-1", "exhausted")
    ends = [e for e in await store.events(sid, "0", 0) if e.type == "end"]
    assert len(ends) == 1 and (await store.get(sid)).status == "exhausted"


async def test_a_retried_create_creates_once(store, queue, redis):
    request = CreateRequest("alice", [PROBLEM])
    keys, plan = store._create_plan(request, ["s1"], None, 1.0)
    for _ in range(2):
        assert await store._create_script(keys=keys, args=[json.dumps(plan)]) == ["created", ""]
    assert await queue.depth() == 1 and await redis.zcard(owner_sessions_key("alice")) == 1
    assert [e.type for e in await store.events("s1", "0", 0)] == ["status"]


async def test_admission_is_atomic_under_parallel_posts(redis):
    store = Store(redis, StoreConfig(quota_active_sessions=5, max_queue=1000))
    posts = [store.create(CreateRequest("alice", [PROBLEM])) for _ in range(50)]
    results = await asyncio.gather(*posts, return_exceptions=True)
    created = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(created), len(refused)) == (5, 45)
    assert await redis.scard(owner_active_key("alice")) == 5


async def test_queue_admission_is_atomic_under_parallel_posts(redis):
    store = Store(redis, StoreConfig(quota_active_sessions=1000, max_queue=7))
    posts = [store.create(CreateRequest(f"t{i}", [PROBLEM])) for i in range(40)]
    results = await asyncio.gather(*posts, return_exceptions=True)
    assert sum(isinstance(r, QueueFull) for r in results) == 33
    assert await JobQueue(redis).depth() == 7
