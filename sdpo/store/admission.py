"""Creating sessions: admission (queue depth and the owner's quota) and the writes in one
script, and the replay of an earlier request with the same Idempotency-Key."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from ..schemas import TERMINAL
from .errors import IdempotencyConflict, QueueFull, QuotaExceeded
from .keys import (
    COMPARE_MIN_TTL_S,
    STATS_KEY,
    compare_key,
    events_key,
    idempotency_key,
    jobs_key,
    owner_active_key,
    owner_sessions_key,
    session_key,
)
from .records import Created, CreateRequest, StoreConfig, new_session_hash


class Admission:
    """The create side of the Store."""

    redis: Redis
    config: StoreConfig
    _create_script: AsyncScript

    async def create(self, request: CreateRequest) -> Created:
        """Create sessions and enqueue their jobs, admission included, in one script; or replay
        an earlier request with the same Idempotency-Key. Raises QueueFull, QuotaExceeded,
        IdempotencyConflict."""
        now = time.time()
        ids = [uuid.uuid4().hex for _ in request.problems]
        compare_id = uuid.uuid4().hex if request.compare else None
        keys, plan = self._create_plan(request, ids, compare_id, now)
        result, earlier = await self._create_script(keys=keys, args=[json.dumps(plan)])
        if result == "quota" and await self._prune_active(request.owner):
            result, earlier = await self._create_script(keys=keys, args=[json.dumps(plan)])
        if result == "replay":
            return self._replay(request, json.loads(earlier))
        if result == "queue_full":
            raise QueueFull
        if result == "quota":
            raise QuotaExceeded
        return Created(ids=ids, compare_id=compare_id)

    def _replay(self, request: CreateRequest, earlier: dict[str, Any]) -> Created:
        if earlier["fingerprint"] != request.fingerprint():
            raise IdempotencyConflict
        return Created(ids=earlier["ids"], compare_id=earlier.get("compare_id"), replayed=True)

    def _create_plan(
        self, request: CreateRequest, ids: list[str], compare_id: str | None, now: float
    ) -> tuple[list[str], dict[str, Any]]:
        owner = request.owner
        keys = [
            owner_active_key(owner),
            owner_sessions_key(owner),
            jobs_key(request.problems[0].model),
            STATS_KEY,
            idempotency_key(owner, request.idempotency_key or ""),
            compare_key(compare_id or ""),
        ]
        sessions = []
        for sid, problem in zip(ids, request.problems, strict=True):
            fields = new_session_hash(sid, owner, problem, now)
            if compare_id:
                fields["compare_id"] = compare_id
            sessions.append(fields)
            keys += [session_key(sid), events_key(sid)]
        record = {"ids": ids, "compare_id": compare_id, "fingerprint": request.fingerprint()}
        plan: dict[str, Any] = {
            "idempotent": request.idempotency_key is not None,
            "record": json.dumps(record),
            "idempotency_ttl_s": self.config.idempotency_ttl_s,
            "max_queue": self.config.max_queue,
            "quota": self.config.quota_active_sessions,
            "events_maxlen": self.config.events_maxlen,
            "sessions": sessions,
        }
        if request.compare is not None:
            plan["compare"] = self._compare_fields(compare_id, request, ids, now)
            budget = request.compare.budget
            plan["compare_ttl_s"] = (
                self.config.session_ttl_s + int(budget.max_wall_s or 0) + COMPARE_MIN_TTL_S
            )
        return keys, plan

    @staticmethod
    def _compare_fields(
        cid: str, request: CreateRequest, ids: list[str], now: float
    ) -> dict[str, str]:
        compare = request.compare
        runs = [
            {"strategy": p.strategy, "seed": p.seed, "session_id": sid}
            for sid, p in zip(ids, request.problems, strict=True)
        ]
        return {
            "id": cid,
            "owner": request.owner,
            "created_at": repr(now),
            "runs": json.dumps(runs),
            "budget": compare.budget.model_dump_json(),
            "seed": str(compare.seed),
            "repeats": str(compare.repeats),
        }

    async def active_sessions(self, owner: str) -> int:
        """Queued or running sessions of an owner."""
        await self._prune_active(owner)
        return await self.redis.scard(owner_active_key(owner))

    async def _prune_active(self, owner: str) -> int:
        """Drop members of the owner's active set that ended (a worker that died between its
        final script and the set's update leaves one behind); returns how many. Safe outside
        the create script: a session is added to the set together with its hash, and a
        member that ended never becomes active again."""
        members = list(await self.redis.smembers(owner_active_key(owner)))
        if not members:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in members:
                pipe.hget(session_key(sid), "status")
            statuses = await pipe.execute()
        ended = [sid for sid, s in zip(members, statuses, strict=True) if s in TERMINAL or not s]
        if ended:
            await self.redis.srem(owner_active_key(owner), *ended)
        return len(ended)
