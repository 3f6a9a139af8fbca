"""Worker heartbeats and the statistics behind /readyz and /metrics (bookkeeping, updated
after the fact: it may lag a crash)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from ..schemas import StepPublic
from .keys import PHASE_BUCKETS_S, STATS_KEY, WORKER_FORGET_S, WORKERS_KEY, jobs_key, phase_field
from .queue import pending_jobs
from .records import Stats


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

    async def heartbeat(self, consumer: str) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(WORKERS_KEY, {consumer: now})
            pipe.zremrangebyscore(WORKERS_KEY, 0, now - WORKER_FORGET_S)
            await pipe.execute()

    async def forget_worker(self, consumer: str) -> None:
        await self.redis.zrem(WORKERS_KEY, consumer)

    async def workers_alive(self, within_s: float) -> int:
        return await self.redis.zcount(WORKERS_KEY, time.time() - within_s, "+inf")

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
            workers_alive=await self.workers_alive(within_s),
        )
