"""Worker heartbeats and the statistics behind /readyz and /metrics (bookkeeping, updated
after the fact: it may lag a crash)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from ..schemas import StepPublic
from .keys import (
    PHASE_BUCKETS_S,
    QUEUE_WAIT_BUCKETS_S,
    STATS_KEY,
    WORKER_FORGET_S,
    WORKER_SLOTS_KEY,
    WORKERS_KEY,
    jobs_key,
    phase_field,
    queue_wait_field,
)
from .queue import pending_jobs
from .records import Stats, WorkerSlots


class Health:
    """The heartbeat and statistics side of the Store."""

    redis: Redis

    async def _count_step(self, step: StepPublic) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(STATS_KEY, "attempts", step.attempts)
            pipe.hincrby(STATS_KEY, "steps", 1)
            for phase, seconds in step.phase_s.items():
                for bucket in PHASE_BUCKETS_S:
                    if seconds <= bucket:
                        pipe.hincrby(STATS_KEY, phase_field(phase, f"le:{bucket}"), 1)
                pipe.hincrbyfloat(STATS_KEY, phase_field(phase, "sum"), seconds)
                pipe.hincrby(STATS_KEY, phase_field(phase, "count"), 1)
            await pipe.execute()

    async def record_queue_wait(self, seconds: float) -> None:
        """A session waited this long between its creation and its first claim."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in QUEUE_WAIT_BUCKETS_S:
                if seconds <= bucket:
                    pipe.hincrby(STATS_KEY, queue_wait_field(f"le:{bucket}"), 1)
            pipe.hincrbyfloat(STATS_KEY, queue_wait_field("sum"), seconds)
            pipe.hincrby(STATS_KEY, queue_wait_field("count"), 1)
            await pipe.execute()

    async def heartbeat(self, consumer: str, slots: WorkerSlots | None = None) -> None:
        """The worker is alive, with these sessions, slots and memory."""
        now = time.time()
        slots = slots or WorkerSlots(0, 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(WORKERS_KEY, {consumer: now})
            pipe.hset(WORKER_SLOTS_KEY, consumer, slots.encode())
            pipe.zrangebyscore(WORKERS_KEY, 0, now - WORKER_FORGET_S)
            pipe.zremrangebyscore(WORKERS_KEY, 0, now - WORKER_FORGET_S)
            *_, forgotten, _ = await pipe.execute()
        if forgotten:
            await self.redis.hdel(WORKER_SLOTS_KEY, *forgotten)

    async def forget_worker(self, consumer: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(WORKERS_KEY, consumer)
            pipe.hdel(WORKER_SLOTS_KEY, consumer)
            await pipe.execute()

    async def worker_slots(self, within_s: float) -> dict[str, WorkerSlots]:
        """The workers with a heartbeat within `within_s`, and their sessions and slots."""
        alive = await self.redis.zrangebyscore(WORKERS_KEY, time.time() - within_s, "+inf")
        if not alive:
            return {}
        values = await self.redis.hmget(WORKER_SLOTS_KEY, alive)
        return {w: WorkerSlots.decode(v) for w, v in zip(alive, values, strict=True)}

    async def stats(self, models: tuple[str, ...], within_s: float) -> Stats:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(STATS_KEY)
            for model in models:
                pipe.xlen(jobs_key(model))
            counters, *depths = await pipe.execute()
        pending = {m: await pending_jobs(self.redis, jobs_key(m)) for m in models}
        return Stats(
            counters={k: float(v) for k, v in counters.items()},
            queue_depth=dict(zip(models, depths, strict=True)),
            queue_pending=pending,
            worker_slots=await self.worker_slots(within_s),
        )
