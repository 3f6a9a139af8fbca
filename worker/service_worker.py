"""`sdpo worker`: join the job group and run up to SDPO_WORKER_MAX_SESSIONS sessions at once.

Each session is its own task, with its own lease, heartbeat touch, checkpoints and commits, as
if it ran alone. They share the model by taking turns on it (worker/compute.py): while one
session's batch is judged in the sandbox, or its step is committed, another one computes.

One job:  claim (a lease on the session) → build the strategy → restore the checkpoint of the
last committed step → run_session, where each step is checkpointed and then committed in one
transaction → finish (shielded from cancellation) → acknowledge the job.

Why a resumed session neither loses nor double-counts an attempt: the store's step script
accepts step k only from the lease holder and only when k steps are committed, so attempts
enter the store exactly once, in order, within max_attempts. The checkpoint written before the
commit is named after the number of committed steps it continues from; a worker that dies
between the two leaves a file nobody loads, and the next one resumes from the last *committed*
step, sampling exactly what the dead worker sampled after it.

Budgets and cancellation are checked between steps (worker.loop) and between the phases of a
step: before judging (the unjudged batch is dropped, never counted) and before the update (the
judged batch commits, the update is skipped).

The runner knows nothing of any one strategy: it uses the Strategy interface only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sandbox import extract_code, parse_spec
from sdpo.schemas import TERMINAL, AttemptPublic, Solution, StepPublic, TestPublic
from sdpo.settings import Settings
from sdpo.store import (
    Claim,
    CommitResult,
    Job,
    JobQueue,
    StepCommit,
    Store,
    StoreConfig,
    WorkerSlots,
)

from .checkpoint import load_checkpoint, save_checkpoint
from .loop import Budget, run_session
from .memory import (
    TYPICAL_PROMPT_TOKENS,
    Footprint,
    MemoryBudget,
    Reservation,
    params_footprint,
)
from .profiles import resolve_params
from .records import Attempt, StepRecord
from .strategies import Problem, Runtime, Strategy, VerifierFailed, make_strategy

log = logging.getLogger("sdpo.worker")

REDIS_RETRIES = 8  # with backoff capped at 2 s: rides out a Redis restart of ~10 s


class LeaseLost(Exception):
    """Another worker holds the session now (ours was presumed dead): stop, acknowledge nothing."""


def connect(url: str) -> Redis:
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), REDIS_RETRIES)
    return Redis.from_url(
        url,
        decode_responses=True,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=2.0,
        health_check_interval=10,
    )


@dataclass
class Running:
    """A job this worker is running, whether its lease was found taken over, and its share of
    the worker's memory."""

    job: Job
    lease_lost: bool = False
    reservation: Reservation | None = None


@dataclass
class WorkerContext:
    """What one worker process shares between its sessions."""

    settings: Settings
    runtime: Runtime
    store: Store
    queue: JobQueue
    stopping: asyncio.Event
    max_sessions: int = 1
    memory: MemoryBudget | None = None  # None: sessions are admitted by max_sessions alone
    running: dict[str, Running] = field(default_factory=dict)  # by job id
    # Set while the worker reads no new jobs. A session handed back at shutdown is requeued
    # only then, or this worker would read its own requeued job and claim it once more.
    not_reading: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.not_reading.set()

    @property
    def consumer(self) -> str:
        return self.settings.consumer_name

    def slots(self) -> WorkerSlots:
        """What the heartbeat says: sessions running, and how many at most (fewer than
        max_sessions where memory admits fewer)."""
        running, most = len(self.running), self.max_sessions
        if self.memory is None:
            return WorkerSlots(running, most)
        most = min(most, running + max(self.memory.sessions_that_fit(), 0 if running else 1))
        return WorkerSlots(running, most, self.memory.reserved, self.memory.budget)


# -- conversions to the stored records ---------------------------------------------------------
def attempt_public(attempt: Attempt, entry_point: str | None = None) -> AttemptPublic:
    """The stored record of an attempt. `entry_point` is the verifier's, so that the code shown
    (and returned as the solution) is the block the sandbox judged."""
    judgement = attempt.judgement
    code, fenced = extract_code(attempt.text, entry_point=entry_point)
    return AttemptPublic(
        index=attempt.index,
        step=attempt.step,
        text=attempt.text,
        code=code if fenced else None,
        passed=attempt.passed,
        verdict=judgement.verdict if judgement else "not_judged",
        feedback=judgement.feedback if judgement else "",
        tests=[
            TestPublic(index=t.index, verdict=t.verdict, time_s=t.time_s)
            for t in (judgement.tests if judgement else [])
        ],
        tokens=len(attempt.token_ids),
    )


def step_public(record: StepRecord, attempts_before: int, elapsed_s: float) -> StepPublic:
    return StepPublic(
        step=record.step,
        attempts=len(record.attempts),
        attempts_used=attempts_before + len(record.attempts),
        pass_count=record.pass_count,
        phase_s=record.phase_s,
        metrics=record.metrics,
        elapsed_s=elapsed_s,
    )


# -- stopping between steps and phases ---------------------------------------------------------
@dataclass
class StopCheck:
    """Why the session should stop now, if it should."""

    ctx: WorkerContext
    running: Running
    session_id: str
    started_at: float
    max_wall_s: float | None

    async def reason(self) -> str | None:
        if self.running.lease_lost:
            return "lease_lost"
        if self.ctx.stopping.is_set():
            return "shutdown"
        if await self.ctx.store.cancel_requested(self.session_id):
            return "cancelled"
        if self.max_wall_s is not None and time.time() - self.started_at >= self.max_wall_s:
            return "budget"
        return None

    async def should_stop(self) -> bool:
        return await self.reason() is not None


# -- one session -------------------------------------------------------------------------------
@dataclass
class SessionRun:
    ctx: WorkerContext
    running: Running
    claim: Claim
    committed_attempts: int = 0
    without_checkpoint: bool = False  # resumed with fresh adapters: the next step says so
    log_bytes: int = 0  # of this session's stored attempt records
    strategy: Strategy | None = field(default=None, repr=False)

    @property
    def sid(self) -> str:
        return self.claim.state.id

    @property
    def job(self) -> Job:
        return self.running.job

    @property
    def lease(self) -> str:
        return self.claim.state.lease or ""

    @property
    def folder(self) -> Path:
        return self.ctx.settings.checkpoints / self.sid

    def checkpoint(self, steps_committed: int) -> Path:
        return self.folder / f"after-{steps_committed}.pt"

    async def run(self) -> None:
        state, compute = self.claim.state, self.ctx.runtime.compute
        try:
            self.strategy = await compute.run(self._build)  # adds its adapter to the model
        except (ValidationError, ValueError) as exc:  # e.g. params this worker does not accept
            await asyncio.shield(self._settle("failed", f"invalid session: {exc}"))
            return
        except Exception as exc:  # e.g. OOM creating the adapter: this session fails, not us
            log.exception("session %s could not be built", self.sid)
            error = f"the worker could not start the session: {type(exc).__name__}: {exc}"
            await asyncio.shield(self._settle("failed", error))
            return
        if self.running.reservation is not None:  # its own parameters and prompt, not typical
            self.running.reservation.resize(self._footprint())
        await self.ctx.store.record_params(self.sid, self.strategy.params.model_dump(mode="json"))
        stop = StopCheck(
            self.ctx, self.running, self.sid, state.started_at, state.budget.max_wall_s
        )
        outcome, error = "failed", ""
        try:
            await self._restore()
            budget = Budget(state.budget.max_attempts, state.budget.max_wall_s)
            result = await run_session(
                self.strategy,
                budget,
                on_step=self._commit,
                should_stop=stop.should_stop,
                started_at=state.started_at,
            )
            outcome = result.outcome
        except VerifierFailed as exc:
            error = f"the verifier failed: {exc}"
        except (LeaseLost, RedisError):
            raise
        except Exception as exc:  # a failed session is data: store why, keep the worker alive
            log.exception("session %s failed", self.sid)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            await asyncio.shield(compute.run(self.strategy.close))
        if outcome == "cancelled":  # stopped: by whom?
            outcome = await self._stopped_outcome(stop)
        await asyncio.shield(self._settle(outcome, error))

    async def _stopped_outcome(self, stop: StopCheck) -> str:
        reason = await stop.reason()
        if reason == "lease_lost":
            raise LeaseLost(self.sid)
        return {"shutdown": "shutdown", "budget": "exhausted"}.get(reason or "", "cancelled")

    def _footprint(self) -> Footprint:
        strategy = self.strategy
        assert strategy is not None
        return params_footprint(
            strategy.loaded.model,
            strategy.params,
            len(strategy.problem_ids),
            self.ctx.settings.update_tokens_per_pass,
        )

    def _build(self) -> Strategy:
        state = self.claim.state
        problem = Problem(state.prompt, parse_spec(state.verifier))
        return make_strategy(
            state.strategy, problem, state.params, self.ctx.runtime, seed=state.seed
        )

    async def _restore(self) -> None:
        """Continue from the checkpoint of the last committed step."""
        state, strategy = self.claim.state, self.strategy
        self.committed_attempts, self.log_bytes = state.attempts_used, state.attempt_bytes
        if state.steps == 0:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)
            return
        saved = await asyncio.to_thread(load_checkpoint, self.checkpoint(state.steps))
        if saved is not None:  # the adapter's weights are the model's: load them in our turn
            await self.ctx.runtime.compute.run(strategy.load_state_dict, saved)
        else:  # no shared checkpoint folder: keep the counts exact, start the adapter afresh
            log.warning("session %s: no checkpoint after step %d", self.sid, state.steps)
            strategy.step_index, strategy.attempts_used = state.steps, state.attempts_used
            strategy.generator.manual_seed(state.seed * 1_000_003 + state.steps)
            self.without_checkpoint = True
            data = {"resumed_without_checkpoint": True, "steps": state.steps}
            await self.ctx.store.add_event(self.sid, "status", data)
        if strategy.attempts_used != state.attempts_used:
            raise RuntimeError(
                f"checkpoint has {strategy.attempts_used} attempts, store {state.attempts_used}"
            )

    async def _commit(self, record: StepRecord) -> None:
        """Checkpoint the state after this step, then commit the step's records atomically."""
        elapsed_s = time.time() - self.claim.state.started_at
        step = step_public(record, self.committed_attempts, elapsed_s)
        step.resumed_without_checkpoint = self.without_checkpoint
        entry_point = getattr(self.strategy.problem.verifier, "entry_point", None)
        attempts = [attempt_public(a, entry_point) for a in record.attempts]
        solution = next(
            (Solution(attempt=a.index, text=a.text, code=a.code) for a in attempts if a.passed),
            None,
        )
        attempts = self._within_log_bytes(attempts)
        expected = list(range(self.committed_attempts + 1, step.attempts_used + 1))
        if [a.index for a in attempts] != expected:
            raise RuntimeError(f"step {record.step}: attempt indices {expected} expected")
        state = await self.ctx.runtime.compute.run(self.strategy.state_dict)  # a copy
        await asyncio.to_thread(save_checkpoint, self.checkpoint(record.step + 1), state)
        commit = StepCommit(self.sid, self.lease, step, attempts, solution)
        result = await self.ctx.store.commit_step(commit)
        if result not in (CommitResult.COMMITTED, CommitResult.DUPLICATE):
            # the checkpoint just written may have recreated the folder of a session that its
            # new holder ended and dropped meanwhile: drop it again then
            await self._leave_or_drop()
            raise LeaseLost(f"{self.sid}: step {record.step} {result.value}")
        self.committed_attempts, self.without_checkpoint = step.attempts_used, False
        self.log_bytes += sum(len(a.model_dump_json().encode()) for a in attempts)
        with contextlib.suppress(FileNotFoundError):
            self.checkpoint(record.step).unlink()

    def _within_log_bytes(self, attempts: list[AttemptPublic]) -> list[AttemptPublic]:
        """Attempts as stored: once the session's records reach attempt_log_bytes, the text
        and code are dropped (the solution, kept apart, never is)."""
        limit, total, kept = self.ctx.settings.attempt_log_bytes, self.log_bytes, []
        for attempt in attempts:
            size = len(attempt.model_dump_json().encode())
            if total + size > limit:
                attempt = attempt.model_copy(update={"text": "", "code": None, "elided": True})
                size = len(attempt.model_dump_json().encode())
            kept.append(attempt)
            total += size
        return kept

    async def _settle(self, outcome: str, error: str) -> None:
        """The job's final bookkeeping. The job is acknowledged and the checkpoints deleted
        only by the worker that ended or handed back the session (or when it had already
        ended): a worker whose lease was taken over must leave both to the new holder."""
        store, queue = self.ctx.store, self.ctx.queue
        forget(self.ctx, self.running)
        if outcome == "shutdown":  # hand the session to the next worker, checkpoint kept
            await self.ctx.not_reading.wait()
            if await store.requeue(self.sid, self.lease, self.job, queue.key):
                log.info("session %s released at shutdown", self.sid)
            else:
                await self._leave_or_drop()
            return
        if await store.finish(self.sid, self.lease, outcome, error):
            log.info("session %s %s %s", self.sid, outcome, error)
            await drop_job(self.ctx, self.job, self.sid)
        else:
            await self._leave_or_drop()

    async def _leave_or_drop(self) -> None:
        state = await self.ctx.store.get(self.sid)
        if state is None or state.status in TERMINAL:  # ended meanwhile (e.g. cancelled)
            await drop_job(self.ctx, self.job, self.sid)
        else:
            log.warning("session %s: lease lost; job left to its new holder", self.sid)


async def drop_job(ctx: WorkerContext, job: Job, sid: str) -> None:
    """A job whose session has ended: delete the session's checkpoints, then acknowledge it (a
    worker that dies in between leaves the job to be dropped again, not a folder behind)."""
    await asyncio.to_thread(shutil.rmtree, ctx.settings.checkpoints / sid, True)
    await ctx.queue.done(job)


def forget(ctx: WorkerContext, running: Running) -> None:
    """Stop heartbeating a job (unless a newer run of it took its place)."""
    if ctx.running.get(running.job.id) is running:
        del ctx.running[running.job.id]


async def run_job(ctx: WorkerContext, job: Job, reservation: Reservation | None = None) -> None:
    """Claim and run one job; jobs of sessions that ended or vanished are dropped."""
    if job.id in ctx.running:  # reclaimed from ourselves after a late heartbeat: still ours
        return
    claim = await ctx.store.claim(job.session_id, job.id, ctx.consumer)
    if not isinstance(claim, Claim):
        log.info("job %s: session %s is %s, dropped", job.id, job.session_id, claim)
        if claim in TERMINAL or claim == "missing":
            await drop_job(ctx, job, job.session_id)
        else:  # a duplicate job of a session that runs elsewhere: its folder is in use
            await ctx.queue.done(job)
        return
    if claim.state.claims > ctx.settings.max_claims:
        error = f"workers died {claim.state.claims - 1} times running this session"
        if await ctx.store.finish(job.session_id, claim.state.lease or "", "failed", error):
            await drop_job(ctx, job, job.session_id)
        return
    log.info("session %s %s", job.session_id, "resumed" if claim.resumed else "started")
    running = ctx.running[job.id] = Running(job, reservation=reservation)  # heartbeated now
    try:
        if not claim.resumed:
            with contextlib.suppress(RedisError):  # a statistic: never worth the session
                await ctx.store.record_queue_wait(claim.state.started_at - claim.state.created_at)
        await SessionRun(ctx, running, claim).run()
    except LeaseLost as lost:
        log.warning("lease lost, session left to its new worker: %s", lost)
    finally:
        forget(ctx, running)


async def run_job_logged(
    ctx: WorkerContext, job: Job, reservation: Reservation | None = None
) -> None:
    """run_job as a task of its own: its failures are logged, never raised into the worker."""
    try:
        await run_job(ctx, job, reservation)
    except RedisError as exc:  # Redis restarting: the job stays pending, to be reclaimed
        log.warning("redis unavailable during job %s (%s); left pending", job.id, exc)
    except Exception:  # a bookkeeping bug: the job stays pending, max_claims bounds it
        log.exception("job %s failed outside its session; the worker carries on", job.id)


async def heartbeat(ctx: WorkerContext) -> None:
    """Say we are alive and how full we are, and keep our jobs from being reclaimed."""
    while True:
        try:
            await ctx.store.heartbeat(ctx.consumer, ctx.slots())
            for running in list(ctx.running.values()):
                if not await ctx.queue.touch(ctx.consumer, running.job):
                    if ctx.running.get(running.job.id) is running:  # not merely finished
                        running.lease_lost = True
        except RedisError as exc:
            log.warning("heartbeat failed: %s", exc)
        await asyncio.sleep(ctx.settings.heartbeat_s)


async def next_job(ctx: WorkerContext) -> Job | None:
    settings = ctx.settings
    job = await ctx.queue.reclaim(ctx.consumer, settings.claim_idle_ms)
    return job or await ctx.queue.read(ctx.consumer, settings.block_ms)


def worker_memory(settings: Settings, runtime: Runtime) -> MemoryBudget:
    """The budget sessions are admitted by, and the footprint of a session with the model
    profile's SDPO defaults (the typical session admission assumes)."""
    model = runtime.engine.loaded.model
    defaults = resolve_params(
        "sdpo", None, profile=runtime.engine.loaded.profile, overrides=runtime.param_overrides
    )
    typical = params_footprint(
        model, defaults, TYPICAL_PROMPT_TOKENS, settings.update_tokens_per_pass
    )
    return MemoryBudget.for_device(model.device, settings.worker_memory_gb, typical)


def max_sessions(settings: Settings, device: str) -> int:
    """SDPO_WORKER_MAX_SESSIONS, else 8 on a GPU and 4 on the CPU."""
    if settings.worker_max_sessions is not None:
        return settings.worker_max_sessions
    return 4 if device == "cpu" else 8


async def serve_jobs(settings: Settings, runtime: Runtime, stopping: asyncio.Event) -> None:
    """Run jobs, up to max_sessions at once, until `stopping` is set; the sessions in progress
    are handed back at a phase end."""
    redis = connect(settings.redis_url)
    store = Store(redis, StoreConfig.from_settings(settings))
    queue = JobQueue(redis, settings.model_name)
    slots = max_sessions(settings, runtime.engine.loaded.model.device.type)
    memory = worker_memory(settings, runtime)
    ctx = WorkerContext(settings, runtime, store, queue, stopping, slots, memory)
    await ctx.queue.ensure_group()
    beat = asyncio.create_task(heartbeat(ctx))
    tasks: set[asyncio.Task] = set()
    ctx.not_reading.clear()
    name = settings.model_name
    log.info(
        "worker %s serving model %r, %d sessions at once, %.2f of %.2f GB per typical session",
        ctx.consumer, name, slots, memory.typical.total / 1e9, memory.budget / 1e9,
    )  # fmt: skip
    try:
        while not stopping.is_set():
            if tasks and len(tasks) >= slots:  # full: wait for a session to end (or for a stop)
                await asyncio.wait(tasks, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                continue
            if tasks and not memory.fits():  # wait for a session to shrink to its size, or end
                await memory.wait_for_change(timeout_s=1.0)
                continue
            try:
                job = await next_job(ctx)
            except RedisError as exc:  # Redis restarting: our jobs stay pending, retry
                log.warning("redis unavailable (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 1.0)
                continue
            if job is not None:
                reservation = memory.reserve(memory.typical)  # until the session knows its own
                task = asyncio.create_task(run_job_logged(ctx, job, reservation))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _, r=reservation: r.release())
        ctx.not_reading.set()
        if tasks:  # each sees `stopping` at its next phase end and hands its session back
            await asyncio.gather(*tasks)
    finally:
        ctx.not_reading.set()
        for task in tasks:
            task.cancel()
        beat.cancel()
        with contextlib.suppress(RedisError, asyncio.CancelledError):
            await beat
            await store.forget_worker(ctx.consumer)
            await ctx.queue.leave(ctx.consumer)
        await redis.aclose()


def run_worker(settings: Settings) -> None:
    """The `sdpo worker` process: build the runtime once, serve jobs until SIGINT/SIGTERM."""
    import torch

    from .runtime import build_runtime

    if settings.redis_url is None:
        raise ValueError("redis_url: a worker needs a Redis URL (SDPO_REDIS_URL)")
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    runtime = build_runtime(settings.engine, settings.model, settings.device, settings)

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await serve_jobs(settings, runtime, stopping)

    asyncio.run(main())
