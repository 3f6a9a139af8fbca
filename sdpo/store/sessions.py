"""The Store: sessions read and cancelled by the gateway, claimed, committed, finished and
handed back by the workers. Creation, events and health live in their own modules."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from ..schemas import AttemptPublic, Budget, ProblemSummary, StepPublic
from .admission import Admission
from .coalesce import Coalesced
from .errors import CommitResult
from .events import EventLog
from .health import Health
from .keys import (
    JOB_GROUP,
    STATS_KEY,
    attempts_key,
    compare_key,
    events_key,
    owner_active_key,
    owner_sessions_key,
    session_key,
    session_keys,
    steps_key,
)
from .queue import Job
from .records import (
    SUMMARY_FIELDS,
    Claim,
    CompareRecord,
    SessionState,
    SnapshotDocument,
    StepCommit,
    StoreConfig,
    summary,
)
from .scripts import register, source

LIST_SCAN_PAGE = 500  # sessions read per round trip when a list is filtered by status


class Store(Admission, EventLog, Health):
    """Sessions, attempts, steps, events and comparisons."""

    def __init__(self, redis: Redis, config: StoreConfig | None = None) -> None:
        self.redis = redis
        self.config = config or StoreConfig()
        self._claim = register(redis, "claim")
        self._commit = register(redis, "commit")
        self._finish = register(redis, "finish")
        self._cancel = register(redis, "cancel")
        self._requeue = register(redis, "requeue")
        self._create_script = register(redis, "create")
        self._open_stream = register(redis, "open_stream")
        self._snapshots = Coalesced(redis, source("snapshot"))

    async def get(self, sid: str) -> SessionState | None:
        values = await self.redis.hgetall(session_key(sid))
        return SessionState.from_hash(values) if values else None

    async def snapshot(self, sid: str) -> tuple[SessionState, list[StepPublic]] | None:
        """The session (without prompt and verifier) and its steps as of one instant, so the
        counters match the records. One script call: this is the hottest read."""
        raw = await self._snapshots.call([session_key(sid), steps_key(sid)])
        if raw is None:
            return None
        document = SnapshotDocument.model_validate_json(raw)  # parsed + validated in one pass
        return SessionState.from_hash(document.session), document.steps

    async def attempts(self, sid: str, offset: int, limit: int) -> tuple[list[AttemptPublic], int]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(attempts_key(sid), offset, offset + limit - 1)
            pipe.llen(attempts_key(sid))
            items, total = await pipe.execute()
        return [AttemptPublic.model_validate_json(a) for a in items], total

    async def list_sessions(
        self, owner: str, offset: int, limit: int, statuses: frozenset[str] = frozenset()
    ) -> tuple[list[ProblemSummary], int]:
        """The owner's sessions, newest first; with `statuses`, only those in them (then the
        whole index is read, in pages). Expired ones are dropped from the index."""
        if not statuses:
            ids = await self.redis.zrevrange(owner_sessions_key(owner), offset, offset + limit - 1)
            return await self._summaries(owner, ids)
        matching: list[ProblemSummary] = []
        start = 0
        while True:
            ids = await self.redis.zrevrange(
                owner_sessions_key(owner), start, start + LIST_SCAN_PAGE - 1
            )
            rows, _ = await self._summaries(owner, ids)
            matching += [row for row in rows if row.status in statuses]
            if len(ids) < LIST_SCAN_PAGE:
                return matching[offset : offset + limit], len(matching)
            start += len(rows)  # the expired ones left the index

    async def _summaries(self, owner: str, ids: list[str]) -> tuple[list[ProblemSummary], int]:
        """The summaries of `ids` (expired ones dropped) and the size of the owner's index."""
        index = owner_sessions_key(owner)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hmget(session_key(sid), SUMMARY_FIELDS)
            pipe.zcard(index)
            *rows, total = await pipe.execute()
        gone = [sid for sid, row in zip(ids, rows, strict=True) if row[0] is None]
        if gone:
            await self.redis.zrem(index, *gone)
        return [summary(row) for row in rows if row[0] is not None], total - len(gone)

    async def cancel(self, sid: str) -> str | None:
        """Request a stop. A queued session ends now; a running one is flagged for its worker.
        Returns the status before the call (None: no such session)."""
        before = await self._cancel(keys=session_keys(sid), args=[self.config.events_maxlen])
        if before == "queued" and await self._end(sid, "", "cancelled", ""):
            return before
        if before == "queued":  # a worker claimed it in between: flag it instead
            return await self.cancel(sid)
        return before or None

    async def _end(self, sid: str, lease: str, status: str, error: str) -> bool:
        now = repr(time.time())
        args = [lease, status, error, now, self.config.session_ttl_s, self.config.events_maxlen]
        if not await self._finish(keys=session_keys(sid), args=args):
            return False
        owner = await self.redis.hget(session_key(sid), "owner")
        async with self.redis.pipeline(transaction=False) as pipe:
            if owner:
                pipe.srem(owner_active_key(owner), sid)
            pipe.hincrby(STATS_KEY, f"sessions_{status}", 1)
            await pipe.execute()
        return True

    async def get_compare(self, cid: str) -> CompareRecord | None:
        h = await self.redis.hgetall(compare_key(cid))
        if not h:
            return None
        return CompareRecord(
            id=h["id"],
            owner=h["owner"],
            created_at=float(h["created_at"]),
            runs=json.loads(h["runs"]),
            budget=Budget.model_validate_json(h["budget"]),
            seed=int(h["seed"]),
            repeats=int(h["repeats"]),
        )

    async def sessions(self, ids: list[str]) -> list[SessionState | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(session_key(sid))
            rows = await pipe.execute()
        return [SessionState.from_hash(h) if h else None for h in rows]

    async def claim(
        self, sid: str, job_id: str, consumer: str, lease: str | None = None
    ) -> Claim | str:
        """Take a session for a job: a queued one, or a running one whose worker died (the same
        job entry, reclaimed). Returns the claim, or why not (a status, or 'missing'). The
        lease is new for every claim (tests pass their own)."""
        lease = lease or uuid.uuid4().hex
        args = [job_id, consumer, lease, repr(time.time()), self.config.events_maxlen]
        result, _ = await self._claim(keys=[session_key(sid), events_key(sid)], args=args)
        if result not in ("claimed", "resumed"):
            return result
        await self.redis.hincrby(STATS_KEY, f"claims_{result}", 1)
        return Claim(state=await self.get(sid), resumed=result == "resumed")

    async def commit_step(self, commit: StepCommit) -> CommitResult:
        step = commit.step
        solution = commit.solution.model_dump_json() if commit.solution else ""
        args = [
            commit.lease,
            step.step,
            step.attempts_used,
            step.model_dump_json(),
            self.config.events_maxlen,
            solution,
            repr(step.elapsed_s) if commit.solution else "",
            *(a.model_dump_json() for a in commit.attempts),
        ]
        result = CommitResult(await self._commit(keys=session_keys(commit.session_id), args=args))
        if result is CommitResult.COMMITTED:
            await self._count_step(step)
        return result

    async def cancel_requested(self, sid: str) -> bool:
        return await self.redis.hget(session_key(sid), "cancel_requested") == "1"

    async def record_params(self, sid: str, params: dict[str, Any]) -> None:
        """The parameters in effect, as the worker resolved them (the model profile's defaults
        filled in); until then the session shows the ones requested."""
        if await self.redis.exists(session_key(sid)):
            await self.redis.hset(session_key(sid), "params", json.dumps(params))

    async def finish(self, sid: str, lease: str, status: str, error: str = "") -> bool:
        """End a session the worker holds: solved, exhausted, cancelled or failed."""
        return await self._end(sid, lease, status, error)

    async def requeue(self, sid: str, lease: str, job: Job, jobs: str) -> bool:
        """Give a held session back to the queue: a new job on the stream `jobs` replaces `job`.
        False: the lease was not ours (the job is left to its new holder)."""
        keys = [session_key(sid), events_key(sid), jobs]
        args = [lease, self.config.events_maxlen, JOB_GROUP, job.id]
        return bool(await self._requeue(keys=keys, args=args))
