"""The service worker's job bookkeeping against a real Redis, in-process, with the tiny random
Llama and the real sandbox: who acknowledges a job, which failures end only their session,
where checkpoint folders go, and what a resume without a checkpoint says."""

import asyncio
import json
import time

import pytest
from redis.asyncio import Redis

from sandbox import parse_spec
from sdpo.schemas import TERMINAL, AttemptPublic, Budget, ProblemCreate
from sdpo.settings import Settings
from sdpo.store import (
    Claim,
    CreateRequest,
    JobQueue,
    Store,
    StoreConfig,
    attempts_key,
    session_key,
)
from worker.memory import params_footprint
from worker.service_worker import (
    LeaseLost,
    Running,
    SessionRun,
    WorkerContext,
    run_job,
    serve_jobs,
    worker_memory,
)
from worker.strategies import Problem, make_strategy

NEVER_PASSES = "def check(output):\n    return False\n"
PROBLEM = ProblemCreate(
    prompt="Write anything.",
    strategy="best_of_k",
    verifier={"type": "checker", "mode": "answer", "code": NEVER_PASSES},
    budget={"max_attempts": 4},
    params={"num_generations": 2, "max_completion_length": 4},
)


@pytest.fixture
async def redis(redis_url):
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def make_ctx(redis, runtime, tmp_path):
    def make(name: str, **overrides) -> WorkerContext:
        settings = Settings(
            redis_url="redis://unused", checkpoint_dir=tmp_path, worker_name=name, **overrides
        )
        store = Store(redis, StoreConfig.from_settings(settings))
        return WorkerContext(settings, runtime, store, JobQueue(redis), asyncio.Event())

    return make


async def _queued(ctx: WorkerContext, problem: ProblemCreate = PROBLEM) -> str:
    await ctx.queue.ensure_group()
    return (await ctx.store.create(CreateRequest("alice", [problem]))).ids[0]


async def test_a_worker_that_lost_its_lease_acknowledges_nothing(make_ctx, redis):
    """Its wall time runs out at the top of the loop before the heartbeat saw the lease go."""
    old, new = make_ctx("old"), make_ctx("new")
    timed = PROBLEM.model_copy(update={"budget": Budget(max_attempts=4, max_wall_s=1)})
    sid = await _queued(old, timed)
    job = await old.queue.read("old", 100)
    stale = await old.store.claim(sid, job.id, "old")
    assert (await new.queue.reclaim("new", 0)).id == job.id
    holder = await new.store.claim(sid, job.id, "new")
    assert isinstance(holder, Claim)
    stale.state.started_at = time.time() - 10
    await SessionRun(old, Running(job), stale).run()
    state = await new.store.get(sid)
    assert (state.status, state.lease) == ("running", holder.state.lease)
    assert await new.queue.pending() == 1  # the new holder's job is still there
    assert await new.store.finish(sid, holder.state.lease, "exhausted")


async def test_a_late_step_of_a_lost_lease_leaves_no_folder_behind(make_ctx, tmp_path):
    """A worker paused past its lease (chaos SIGSTOPs workers) while another ran the session to
    its end and deleted its checkpoints: the step it then commits writes a checkpoint before
    the store refuses it. The worker finds the session ended and drops its job as any worker
    does for an ended session, so that folder goes too."""
    old, new = make_ctx("old"), make_ctx("new")
    sid = await _queued(old)
    job = await old.queue.read("old", 100)
    stale = await old.store.claim(sid, job.id, "old")
    assert (await new.queue.reclaim("new", 0)).id == job.id
    holder = await new.store.claim(sid, job.id, "new")
    assert await new.store.finish(sid, holder.state.lease, "exhausted")
    await new.queue.done(job)
    with pytest.raises(LeaseLost):
        await SessionRun(old, Running(job), stale).run()
    assert not (tmp_path / sid).exists()
    assert (await new.store.get(sid)).status == "exhausted"


async def test_a_session_that_cannot_be_built_fails_alone(make_ctx, redis):
    """A strategy this worker does not know (a newer gateway's), a model error or an OOM while
    building: the session fails with the message, the job is done, the worker goes on."""
    ctx = make_ctx("w")
    sid = await _queued(ctx)
    await redis.hset(session_key(sid), "strategy", "tree_search")
    await run_job(ctx, await ctx.queue.read("w", 100))
    state = await ctx.store.get(sid)
    assert state.status == "failed" and "tree_search" in state.error
    assert await ctx.queue.pending() == 0 and await ctx.queue.depth() == 0
    good = await _queued(ctx)
    await run_job(ctx, await ctx.queue.read("w", 100))
    assert (await ctx.store.get(good)).status == "exhausted"


async def test_no_checkpoint_folder_leaks_past_max_claims(make_ctx, tmp_path):
    ctx = make_ctx("w", max_claims=1, claim_idle_ms=100)
    sid = await _queued(ctx)
    job = await ctx.queue.read("dead", 100)
    await ctx.store.claim(sid, job.id, "dead")
    (tmp_path / sid).mkdir()
    (tmp_path / sid / "after-1.pt").write_bytes(b"x")
    await asyncio.sleep(0.2)
    job = await ctx.queue.reclaim("w", 100)
    await run_job(ctx, job)
    assert (await ctx.store.get(sid)).status == "failed"
    assert not (tmp_path / sid).exists()


async def test_no_checkpoint_folder_leaks_when_a_released_session_is_cancelled(make_ctx, tmp_path):
    ctx = make_ctx("w")
    sid = await _queued(ctx)
    job = await ctx.queue.read("w", 100)
    claim = await ctx.store.claim(sid, job.id, "w")
    (tmp_path / sid).mkdir()
    (tmp_path / sid / "after-1.pt").write_bytes(b"x")
    assert await ctx.store.requeue(sid, claim.state.lease, job, ctx.queue.key)
    assert await ctx.store.cancel(sid) == "queued"
    await run_job(ctx, await ctx.queue.read("w", 100))  # the job of a cancelled session
    assert not (tmp_path / sid).exists() and await ctx.queue.depth() == 0


async def test_a_resume_without_a_checkpoint_says_so(make_ctx, redis):
    """The worker that committed step 0 saved its checkpoint elsewhere (no shared volume)."""
    ctx = make_ctx("w", claim_idle_ms=100)
    sid = await _queued(ctx)
    job = await ctx.queue.read("elsewhere", 100)
    claim = await ctx.store.claim(sid, job.id, "elsewhere")
    run = SessionRun(ctx, Running(job), claim)
    run.strategy = run._build()
    await run._restore()
    await run._commit(await run.strategy.step(4, None))
    for path in ctx.settings.checkpoints.rglob("*.pt"):
        path.unlink()
    await asyncio.sleep(0.2)
    await run_job(ctx, await ctx.queue.reclaim("w", 100))
    _, steps = await ctx.store.snapshot(sid)
    assert [s.resumed_without_checkpoint for s in steps] == [False, True]
    events = await ctx.store.events(sid, "0", 0)
    flagged = [json.loads(e.data) for e in events if e.type == "status"]
    assert any(d.get("resumed_without_checkpoint") for d in flagged)


async def test_the_attempt_log_of_a_session_is_bounded_in_bytes(make_ctx, redis):
    ctx = make_ctx("w", attempt_log_bytes=2048)
    wordy = PROBLEM.model_copy(
        update={
            "budget": Budget(max_attempts=12),
            "params": {**PROBLEM.params, "max_completion_length": 48},
        }
    )
    sid = await _queued(ctx, wordy)
    await run_job(ctx, await ctx.queue.read("w", 100))
    stored = await redis.lrange(attempts_key(sid), 0, -1)
    attempts = [AttemptPublic.model_validate_json(a) for a in stored]
    assert [a.index for a in attempts] == list(range(1, 13))
    assert sum(len(a.encode()) for a in stored) <= 2048 + 12 * 400
    kept = [a for a in attempts if not a.elided]
    elided = [a for a in attempts if a.elided]
    assert kept and elided and kept[-1].index < elided[0].index
    assert all(a.text == "" and a.code is None and a.verdict for a in elided)
    assert (await ctx.store.get(sid)).status == "exhausted"


BROKEN_CHECKER = "def check(output):\n    raise RuntimeError('the checker is broken')\n"


async def _serve_until_done(redis, runtime, folder, slots: int, sids: list[str], **settings):
    """One in-process worker (named after its checkpoint folder) running up to `slots`
    sessions at once until `sids` have ended."""
    settings = Settings(
        redis_url=redis_url_of(redis),
        checkpoint_dir=folder,
        worker_name=folder.name,
        worker_max_sessions=slots,
        block_ms=50,
        heartbeat_s=0.2,
        **settings,
    )
    store = Store(redis, StoreConfig.from_settings(settings))
    stopping = asyncio.Event()
    worker = asyncio.create_task(serve_jobs(settings, runtime, stopping))
    try:
        for _ in range(1200):
            states = await store.sessions(sids)
            if all(s is not None and s.status in TERMINAL for s in states):
                return states
            await asyncio.sleep(0.05)
        raise TimeoutError(f"sessions not finished: {[s.status for s in states]}")
    finally:
        stopping.set()
        await worker


def redis_url_of(redis: Redis) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


async def test_eight_sessions_at_once_end_exactly_as_they_do_alone(redis, runtime, tmp_path):
    """8 sessions of all three strategies, plus one whose verifier is broken, on one worker:
    together (their batches sampled in shared forward passes, the SDPO sessions' updates in
    shared passes when they coincide), each samples exactly the attempts it samples alone; the
    broken one fails with its message and disturbs nobody; and the sessions did take turns
    (their steps waited)."""
    strategies = ["sdpo", "best_of_k", "multi_turn"]
    base = PROBLEM.model_dump()
    sdpo_params = {**base["params"], "learning_rate": 0.05}  # updates that move the samples
    bodies = [
        ProblemCreate(**{**base, "strategy": strategies[i % 3], "seed": 10 + i,
                         "budget": {"max_attempts": 6},
                         "params": sdpo_params if i % 3 == 0 else base["params"]})
        for i in range(8)
    ]  # fmt: skip
    verifier = {"type": "checker", "mode": "answer", "code": BROKEN_CHECKER}
    broken = ProblemCreate(**{**base, "verifier": verifier})
    store = Store(redis, StoreConfig.from_settings(Settings()))
    await JobQueue(redis).ensure_group()

    async def run(name: str, slots: int) -> tuple[list, list[list[str]], list]:
        created = await store.create(CreateRequest("alice", [*bodies, broken]))
        states = await _serve_until_done(redis, runtime, tmp_path / name, slots, created.ids)
        texts = [[a.text for a in (await store.attempts(sid, 0, 100))[0]] for sid in created.ids]
        steps = [(await store.snapshot(sid))[1] for sid in created.ids]
        return states, texts, steps

    alone_states, alone_texts, _ = await run("alone", 1)
    log = runtime.generations.log
    updates = runtime.updates.log
    assert log.ticks > 0 and log.most_requests == 1  # one session at a time: one per tick
    assert updates.ticks > 0 and updates.most_requests == 1
    together_states, together_texts, together_steps = await run("together", 8)
    assert log.most_requests > 1  # sessions sampled together
    # SDPO updates that coincide share passes (whether they do depends on judging times)
    assert updates.ticks > 0 and runtime.updates.together
    assert [s.status for s in together_states] == [*(["exhausted"] * 8), "failed"]
    assert "the checker is broken" in together_states[-1].error
    assert [s.status for s in alone_states] == [s.status for s in together_states]
    assert together_texts == alone_texts and all(len(t) == 6 for t in together_texts[:8])
    spans = [(s.started_at, s.finished_at) for s in together_states[:8]]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all ran at once
    assert any("wait" in step.phase_s for steps in together_steps for step in steps)


async def test_a_worker_starts_no_session_that_its_memory_would_not_hold(redis, runtime, tmp_path):
    """With room for a typical session plus one and a half of these (SDPO_WORKER_MEMORY_GB),
    a worker of 4 slots runs 2 of 4 sessions at a time, not 4, and all 4 end."""
    store = Store(redis, StoreConfig.from_settings(Settings()))
    await JobQueue(redis).ensure_group()
    fields = {"strategy": "sdpo", "budget": {"max_attempts": 8}}
    body = ProblemCreate(**{**PROBLEM.model_dump(), **fields})
    typical = worker_memory(Settings(), runtime).typical.total
    problem = Problem(body.prompt, parse_spec(body.verifier.model_dump()))
    strategy = make_strategy("sdpo", problem, body.params, runtime, seed=0)
    model, prompt = runtime.engine.loaded.model, len(strategy.problem_ids)
    own = params_footprint(model, strategy.params, prompt, Settings().update_tokens_per_pass)
    own = own.total
    strategy.close()
    assert own < typical  # a short prompt: less than the 256 tokens admission assumes
    created = await store.create(CreateRequest("alice", [body] * 4))
    budget_gb = (typical + 1.5 * own) / 1e9
    states = await _serve_until_done(
        redis, runtime, tmp_path / "w", 4, created.ids, worker_memory_gb=budget_gb
    )
    assert [s.status for s in states] == ["exhausted"] * 4
    spans = [(s.started_at, s.finished_at) for s in states]
    at_once = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert at_once == 2
