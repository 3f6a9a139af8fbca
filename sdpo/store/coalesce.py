"""Auto-pipelining of one hot script (the status read)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class Coalesced:
    """One script, called by many concurrent requests: the calls made during one turn of the
    event loop go to Redis together, in one pipeline (auto-pipelining). Under load this turns
    hundreds of round trips, each with the client's per-command cost, into a few."""

    def __init__(self, redis: Redis, script: str) -> None:
        self.redis, self.script = redis, script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self._waiting: list[tuple[list[str], asyncio.Future]] = []
        self._flushes: set[asyncio.Task] = set()

    async def call(self, keys: list[str]) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((keys, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._schedule)
        return await future

    def _schedule(self) -> None:
        task = asyncio.ensure_future(self._flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            results = await self._run([keys for keys, _ in batch])
        except Exception as error:  # e.g. Redis down: every caller gets the error
            results = [error] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _run(self, calls: list[list[str]]) -> list[Any]:
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys in calls:
                    pipe.evalsha(self.sha, len(keys), *keys)
                results = await pipe.execute(raise_on_error=False)
            if attempt or not any(isinstance(r, NoScriptError) for r in results):
                return results
            await self.redis.script_load(self.script)  # a new or restarted Redis
        return results
