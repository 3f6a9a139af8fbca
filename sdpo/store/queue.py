"""The job queue: one Redis Stream per model, read by one consumer group."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .keys import JOB_GROUP, jobs_key
from .scripts import register


async def pending_jobs(redis: Redis, key: str) -> int:
    try:
        return (await redis.xpending(key, JOB_GROUP))["pending"]
    except ResponseError:  # no group yet: no worker has ever started
        return 0


@dataclass(frozen=True)
class Job:
    id: str
    session_id: str


class JobQueue:
    """One model's job stream, read by a consumer group. A job stays pending under its worker
    until it is done; a worker's heartbeat keeps it fresh, and XAUTOCLAIM hands the jobs of a
    silent worker to another one."""

    def __init__(self, redis: Redis, model: str = "default") -> None:
        self.redis = redis
        self.key = jobs_key(model)
        self._touch = register(redis, "touch")
        self._cursor = "0-0"  # where the next XAUTOCLAIM scan of the pending list starts

    async def ensure_group(self) -> None:
        try:  # from "0": jobs enqueued before the first worker ever started are kept
            await self.redis.xgroup_create(self.key, JOB_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def enqueue(self, sid: str) -> str:
        return await self.redis.xadd(self.key, {"session": sid})

    async def read(self, consumer: str, block_ms: int) -> Job | None:
        reply = await self.redis.xreadgroup(
            JOB_GROUP, consumer, {self.key: ">"}, count=1, block=block_ms
        )
        if not reply or not reply[0][1]:
            return None
        job_id, fields = reply[0][1][0]
        return Job(id=job_id, session_id=fields["session"])

    async def reclaim(self, consumer: str, min_idle_ms: int) -> Job | None:
        """Take over a job that has been silent for min_idle_ms (a dead worker's). One call
        scans the whole pending list if it must: XAUTOCLAIM looks at most COUNT x 10 entries,
        and its cursor says where to go on (0-0: the scan wrapped around)."""
        wrapped = False
        while True:
            cursor, claimed, *_ = await self.redis.xautoclaim(
                self.key, JOB_GROUP, consumer, min_idle_ms, start_id=self._cursor, count=1
            )
            wrapped = wrapped or self._cursor == "0-0"
            self._cursor = cursor
            for job_id, fields in claimed:
                if job_id is not None and fields:
                    return Job(id=job_id, session_id=fields["session"])
            if cursor == "0-0" and wrapped:
                return None

    async def touch(self, consumer: str, job: Job) -> bool:
        """Heartbeat for a job. False: another worker has reclaimed it."""
        return bool(await self._touch(keys=[self.key], args=[JOB_GROUP, consumer, job.id]))

    async def done(self, job: Job) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.key, JOB_GROUP, job.id)
            pipe.xdel(self.key, job.id)
            await pipe.execute()

    async def depth(self) -> int:
        return await self.redis.xlen(self.key)

    async def pending(self) -> int:
        return await pending_jobs(self.redis, self.key)

    async def leave(self, consumer: str) -> None:
        """Remove an idle consumer from the group (only when it holds no job)."""
        pending = await self.redis.xpending_range(
            self.key, JOB_GROUP, min="-", max="+", count=1, consumername=consumer
        )
        if not pending:
            await self.redis.xgroup_delconsumer(self.key, JOB_GROUP, consumer)
