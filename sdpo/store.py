"""The Redis store and job queue: the one contract between the gateway and the workers.

Free of FastAPI and torch. Every key, prefix and expiry is defined in the constants section
below and nowhere else. All keys of one session share the `{session_id}` hash tag, so the step
transaction (a Lua script) touches one Redis Cluster slot.

Invariants:
* A session's attempt and step records and its counters change only inside the step script,
  which checks the worker's lease and the step index: a step commits once, in order, within the
  budget, by the worker that holds the session.
* Events go to a capped stream per session (not pub/sub, which loses messages), so a client
  resumes from its Last-Event-ID.
* The statistics hash is bookkeeping for /metrics, updated after the fact; it may lag a crash.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from .schemas import (
    TERMINAL,
    AttemptPublic,
    Budget,
    CompareCreate,
    ProblemCreate,
    ProblemPublic,
    ProblemSummary,
    Solution,
    StepPublic,
)

# -- keys and expiries: the only place they are spelled -------------------------------------------
PREFIX = "sdpo"
JOB_GROUP = "workers"
WORKERS_KEY = f"{PREFIX}:workers"  # ZSET consumer -> unix time of its last heartbeat
STATS_KEY = f"{PREFIX}:stats"  # HASH of counters for /metrics
COMPARE_MIN_TTL_S = 24 * 3600  # a comparison outlives its sessions' queueing by at least this
WORKER_FORGET_S = 24 * 3600  # heartbeats older than this are dropped from WORKERS_KEY
STREAM_LEASE_S = 30  # an event stream not renewed this long is gone (its gateway died)
PHASE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def session_key(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:session"  # HASH: the session's state


def attempts_key(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:attempts"  # LIST of AttemptPublic JSON, by index


def steps_key(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:steps"  # LIST of StepPublic JSON, by step


def events_key(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:events"  # STREAM of {type, data}, capped


def session_keys(sid: str) -> list[str]:
    return [session_key(sid), attempts_key(sid), steps_key(sid), events_key(sid)]


def compare_key(cid: str) -> str:
    return f"{PREFIX}:compare:{{{cid}}}"  # HASH: owner, runs, budget


def owner_sessions_key(owner: str) -> str:
    return f"{PREFIX}:owner:{{{owner}}}:sessions"  # ZSET sid -> created_at


def owner_active_key(owner: str) -> str:
    return f"{PREFIX}:owner:{{{owner}}}:active"  # SET of queued or running sids (the quota)


def owner_streams_key(owner: str) -> str:
    return f"{PREFIX}:owner:{{{owner}}}:streams"  # ZSET stream id -> unix time of its last renewal


def idempotency_key(owner: str, key: str) -> str:
    return f"{PREFIX}:owner:{{{owner}}}:idem:{key}"  # STRING: {ids, compare_id, fingerprint}


def jobs_key(model: str) -> str:
    return f"{PREFIX}:jobs:{{{model}}}"  # STREAM of {session}; entries deleted when done


def phase_field(phase: str, part: str) -> str:
    return f"phase:{phase}:{part}"  # in STATS_KEY: le:<bucket>, sum, count


def recorded_phases(counters: dict[str, float]) -> list[str]:
    return sorted({key.split(":")[1] for key in counters if key.startswith("phase:")})


@dataclass(frozen=True)
class StoreConfig:
    session_ttl_s: int = 7 * 24 * 3600
    idempotency_ttl_s: int = 24 * 3600
    events_maxlen: int = 2000
    max_queue: int = 1000
    quota_active_sessions: int = 50

    @classmethod
    def from_settings(cls, settings: Any) -> StoreConfig:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


# -- typed errors (the gateway maps them to HTTP) --------------------------------------------------
class QueueFull(Exception):
    """The model's job stream holds max_queue jobs."""


class QuotaExceeded(Exception):
    """The caller has quota_active_sessions sessions queued or running."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key was reused with a different request body."""


class ReplayExpired(Exception):
    """An Idempotency-Key still maps to sessions that have expired (or were lost)."""


class TooManyStreams(Exception):
    """The caller has its limit of open event streams."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} open event streams per API key")
        self.limit = limit


class CommitResult(enum.Enum):
    COMMITTED = "committed"
    DUPLICATE = "duplicate"  # this very step was committed before (a retried call)
    LEASE_LOST = "lease_lost"  # another worker holds the session now
    OUT_OF_ORDER = "out_of_order"  # the store's step count differs from the worker's
    OVER_BUDGET = "over_budget"  # would exceed max_attempts, or counts disagree


# -- Lua: every script touches the keys of one session only ---------------------------------------
# The lease (ARGV[3]) is new for every call and doubles as its idempotency token: a retried call
# whose first run happened finds its own lease in place and answers what the first run did.
_CLAIM = """
local s = redis.call('HMGET', KEYS[1], 'status', 'job_id', 'lease', 'claim_result', 'claims')
if not s[1] then return {'missing', '0'} end
if s[1] == 'running' and s[3] == ARGV[3] then return {s[4], s[5]} end
local result
if s[1] == 'queued' then
  result = 'claimed'
  if redis.call('HEXISTS', KEYS[1], 'started_at') == 0 then
    redis.call('HSET', KEYS[1], 'started_at', ARGV[4])
  end
elseif s[1] == 'running' and s[2] == ARGV[1] then
  result = 'resumed'
else
  return {s[1], '0'}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'job_id', ARGV[1], 'worker', ARGV[2],
           'lease', ARGV[3], 'claim_result', result)
local claims = redis.call('HINCRBY', KEYS[1], 'claims', 1)
local data = cjson.encode({status='running', worker=ARGV[2], claims=claims})
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'type', 'status', 'data', data)
return {result, tostring(claims)}
"""

_COMMIT = """
local s = redis.call('HMGET', KEYS[1], 'lease', 'status', 'steps', 'attempts_used', 'max_attempts')
if s[1] ~= ARGV[1] or s[2] ~= 'running' then return 'lease_lost' end
local step = tonumber(ARGV[2])
if tonumber(s[3]) == step + 1 then return 'duplicate' end
if tonumber(s[3]) ~= step then return 'out_of_order' end
local used = tonumber(s[4]) + (#ARGV - 7)
if used ~= tonumber(ARGV[3]) or used > tonumber(s[5]) then return 'over_budget' end
local bytes = 0
for i = 8, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  bytes = bytes + #ARGV[i]
end
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[1], 'steps', step + 1, 'attempts_used', used)
redis.call('HINCRBY', KEYS[1], 'attempt_bytes', bytes)
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[1], 'first_success_attempt') == 0 then
  local first = cjson.decode(ARGV[6])
  redis.call('HSET', KEYS[1], 'first_success_attempt', first.attempt,
             'first_success_s', ARGV[7], 'solution', ARGV[6])
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'type', 'step', 'data', ARGV[4])
return 'committed'
"""

# ARGV: lease ('' = not leased, e.g. a cancel of a queued session), status, error, now, ttl, maxlen.
# A retried call whose first run ended the session finds its lease in 'ended_by' and answers 1.
_FINISH = """
local s = redis.call('HMGET', KEYS[1], 'lease', 'status', 'attempts_used', 'first_success_attempt',
                     'ended_by')
if not s[2] then return 0 end
if ARGV[1] ~= '' and s[5] == ARGV[1] then return 1 end
if s[2] ~= 'running' and s[2] ~= 'queued' then return 0 end
if (s[1] or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[4], 'ended_by', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
redis.call('HDEL', KEYS[1], 'lease')
local data = {status=ARGV[2], attempts_used=tonumber(s[3]),
              first_success_attempt=tonumber(s[4] or ''), error=ARGV[3]}
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'type', 'end', 'data',
           cjson.encode(data))
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
"""

# Returns the status before the call. A queued session ends at once; a running one is flagged,
# and its worker stops between phases.
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if status == 'running' and redis.call('HGET', KEYS[1], 'cancel_requested') ~= '1' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[1], '*', 'type', 'status', 'data',
             cjson.encode({status='running', cancel_requested=true}))
end
return status
"""

# A worker that stops on purpose hands its session back: the session is queued again, a new job
# enqueued and the old one acknowledged, in one step (two calls could leave a queued session
# without a job). KEYS: session, events, jobs. ARGV: lease, maxlen, group, old job id. A retried
# call whose first run happened finds its lease in 'released_by' and answers 1, enqueuing nothing.
_REQUEUE = """
local s = redis.call('HMGET', KEYS[1], 'lease', 'released_by')
if s[2] == ARGV[1] then return 1 end
if s[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'released_by', ARGV[1])
redis.call('HDEL', KEYS[1], 'lease', 'job_id', 'worker')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'type', 'status', 'data',
           cjson.encode({status='queued'}))
redis.call('XADD', KEYS[3], '*', 'session', redis.call('HGET', KEYS[1], 'id'))
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
return 1
"""

# Admission and creation in one step, so parallel requests cannot all pass the checks and then
# all write (check-then-act). KEYS: owner active, owner sessions, jobs, stats, idempotency, compare,
# then session and events of each new session. ARGV[1]: the CreatePlan as JSON.
_CREATE = """
local p = cjson.decode(ARGV[1])
if redis.call('EXISTS', KEYS[7]) == 1 then return {'created', ''} end  -- a retry of this call
if p.idempotent then
  local earlier = redis.call('GET', KEYS[5])
  if earlier then return {'replay', earlier} end
end
local n = #p.sessions
if redis.call('XLEN', KEYS[3]) + n > p.max_queue then return {'queue_full', ''} end
if redis.call('SCARD', KEYS[1]) + n > p.quota then return {'quota', ''} end
if p.idempotent then redis.call('SET', KEYS[5], p.record, 'EX', p.idempotency_ttl_s) end
local function flat(map)
  local out = {}
  for k, v in pairs(map) do out[#out + 1] = k; out[#out + 1] = v end
  return out
end
for i, fields in ipairs(p.sessions) do
  redis.call('HSET', KEYS[5 + 2 * i], unpack(flat(fields)))
  redis.call('XADD', KEYS[6 + 2 * i], 'MAXLEN', '~', p.events_maxlen, '*', 'type', 'status',
             'data', cjson.encode({status='queued'}))
  redis.call('ZADD', KEYS[2], fields.created_at, fields.id)
  redis.call('SADD', KEYS[1], fields.id)
  redis.call('XADD', KEYS[3], '*', 'session', fields.id)
end
if p.compare then
  redis.call('HSET', KEYS[6], unpack(flat(p.compare)))
  redis.call('EXPIRE', KEYS[6], p.compare_ttl_s)
end
redis.call('HINCRBY', KEYS[4], 'sessions_created', n)
return {'created', ''}
"""

# Keep a job pending under its consumer: resets the idle time that XAUTOCLAIM looks at, but only
# while the job is still ours (never steal it back from a worker that reclaimed it).
_TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


# An event stream's place in its owner's limit. KEYS: owner streams. ARGV: stream id, now,
# lease seconds, limit. Places not renewed within the lease are dropped first.
_OPEN_STREAM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# The status read: the hash and its committed steps as one JSON document, read atomically. The
# prompt and the verifier stay out of it (the view never shows them; they can be large).
_SNAPSHOT = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local fields = {}
for i = 1, #h, 2 do fields[h[i]] = h[i + 1] end
fields['prompt'], fields['verifier'] = nil, nil
local steps, n = {}, tonumber(fields['steps'])
if n > 0 then steps = redis.call('LRANGE', KEYS[2], 0, n - 1) end
return '{"session":' .. cjson.encode(fields) .. ',"steps":[' .. table.concat(steps, ',') .. ']}'
"""


# -- records ---------------------------------------------------------------------------------------
def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


@dataclass
class SessionState:
    """The session hash, typed. Times are unix seconds."""

    id: str
    owner: str
    status: str
    strategy: str
    model: str
    seed: int
    prompt: str
    verifier: dict[str, Any]
    params: dict[str, Any]
    budget: Budget
    created_at: float
    attempts_used: int = 0
    steps: int = 0
    attempt_bytes: int = 0  # of the stored attempt records
    compare_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    first_success_attempt: int | None = None
    first_success_s: float | None = None
    solution: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    lease: str | None = None
    job_id: str | None = None
    worker: str | None = None
    claims: int = 0

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> SessionState:
        return cls(
            id=h["id"],
            owner=h["owner"],
            status=h["status"],
            strategy=h["strategy"],
            model=h["model"],
            seed=int(h["seed"]),
            prompt=h.get("prompt", ""),
            verifier=json.loads(h.get("verifier", "{}")),
            params=json.loads(h["params"]),
            budget=Budget(
                max_attempts=int(h["max_attempts"]), max_wall_s=_float(h.get("max_wall_s"))
            ),
            created_at=float(h["created_at"]),
            attempts_used=int(h.get("attempts_used", 0)),
            steps=int(h.get("steps", 0)),
            attempt_bytes=int(h.get("attempt_bytes", 0)),
            compare_id=h.get("compare_id") or None,
            started_at=_float(h.get("started_at")),
            finished_at=_float(h.get("finished_at")),
            first_success_attempt=_int(h.get("first_success_attempt")),
            first_success_s=_float(h.get("first_success_s")),
            solution=json.loads(h["solution"]) if h.get("solution") else None,
            error=h.get("error") or None,
            cancel_requested=h.get("cancel_requested") == "1",
            lease=h.get("lease") or None,
            job_id=h.get("job_id") or None,
            worker=h.get("worker") or None,
            claims=int(h.get("claims", 0)),
        )

    def public(self, steps: list[StepPublic]) -> ProblemPublic:
        return ProblemPublic(
            id=self.id,
            status=self.status,
            strategy=self.strategy,
            model=self.model,
            seed=self.seed,
            budget=self.budget,
            params=self.params,
            attempts_used=self.attempts_used,
            first_success_attempt=self.first_success_attempt,
            first_success_s=self.first_success_s,
            solution=Solution(**self.solution) if self.solution else None,
            steps=steps,
            error=self.error,
            cancel_requested=self.cancel_requested,
            compare_id=self.compare_id,
            resumed=max(self.claims - 1, 0),
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


def _new_session_hash(sid: str, owner: str, problem: ProblemCreate, now: float) -> dict[str, str]:
    return {
        "id": sid,
        "owner": owner,
        "status": "queued",
        "strategy": problem.strategy,
        "model": problem.model,
        "seed": str(problem.seed),
        "prompt": problem.prompt,
        "verifier": problem.verifier.model_dump_json(),
        "params": json.dumps(problem.params),
        "max_attempts": str(problem.budget.max_attempts),
        "max_wall_s": "" if problem.budget.max_wall_s is None else str(problem.budget.max_wall_s),
        "created_at": repr(now),
        "attempts_used": "0",
        "steps": "0",
        "claims": "0",
    }


class _SnapshotDocument(BaseModel):
    session: dict[str, str]
    steps: list[StepPublic]


SUMMARY_FIELDS = (
    "id",
    "status",
    "strategy",
    "attempts_used",
    "first_success_attempt",
    "created_at",
    "finished_at",
)


def _summary(values: list[str | None]) -> ProblemSummary:
    h = dict(zip(SUMMARY_FIELDS, values, strict=True))
    return ProblemSummary(
        id=h["id"],
        status=h["status"],
        strategy=h["strategy"],
        attempts_used=int(h["attempts_used"] or 0),
        first_success_attempt=_int(h["first_success_attempt"]),
        created_at=float(h["created_at"]),
        finished_at=_float(h["finished_at"]),
    )


@dataclass(frozen=True)
class CreateRequest:
    """Sessions to create in one transaction: a problem, or a comparison's runs."""

    owner: str
    problems: list[ProblemCreate]
    kind: str = "problems"  # which endpoint; part of the idempotency fingerprint
    compare: CompareCreate | None = None
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        body = self.compare or self.problems[0]
        return hashlib.sha256(f"{self.kind}:{body.model_dump_json()}".encode()).hexdigest()


@dataclass(frozen=True)
class Created:
    ids: list[str]
    compare_id: str | None = None
    replayed: bool = False  # an Idempotency-Key matched an earlier request


@dataclass(frozen=True)
class Claim:
    state: SessionState
    resumed: bool  # another worker held it before


@dataclass(frozen=True)
class StepCommit:
    """One step's records, committed together or not at all."""

    session_id: str
    lease: str
    step: StepPublic
    attempts: list[AttemptPublic]
    solution: Solution | None = None


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    data: str  # JSON


@dataclass(frozen=True)
class CompareRecord:
    id: str
    owner: str
    created_at: float
    runs: list[dict[str, Any]]  # [{strategy, seed, session_id}]
    budget: Budget
    seed: int
    repeats: int


@dataclass(frozen=True)
class Stats:
    counters: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(default_factory=dict)
    queue_pending: dict[str, int] = field(default_factory=dict)
    workers_alive: int = 0


class _Coalesced:
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


class Store:
    """Sessions, attempts, steps, events and comparisons."""

    def __init__(self, redis: Redis, config: StoreConfig | None = None) -> None:
        self.redis = redis
        self.config = config or StoreConfig()
        self._claim = redis.register_script(_CLAIM)
        self._commit = redis.register_script(_COMMIT)
        self._finish = redis.register_script(_FINISH)
        self._cancel = redis.register_script(_CANCEL)
        self._requeue = redis.register_script(_REQUEUE)
        self._create_script = redis.register_script(_CREATE)
        self._open_stream = redis.register_script(_OPEN_STREAM)
        self._snapshots = _Coalesced(redis, _SNAPSHOT)

    # -- gateway: create ------------------------------------------------------------------------
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
            fields = _new_session_hash(sid, owner, problem, now)
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

    # -- gateway: read --------------------------------------------------------------------------
    async def get(self, sid: str) -> SessionState | None:
        values = await self.redis.hgetall(session_key(sid))
        return SessionState.from_hash(values) if values else None

    async def snapshot(self, sid: str) -> tuple[SessionState, list[StepPublic]] | None:
        """The session (without prompt and verifier) and its steps as of one instant, so the
        counters match the records. One script call: this is the hottest read."""
        raw = await self._snapshots.call([session_key(sid), steps_key(sid)])
        if raw is None:
            return None
        document = _SnapshotDocument.model_validate_json(raw)  # parsed + validated in one pass
        return SessionState.from_hash(document.session), document.steps

    async def attempts(self, sid: str, offset: int, limit: int) -> tuple[list[AttemptPublic], int]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(attempts_key(sid), offset, offset + limit - 1)
            pipe.llen(attempts_key(sid))
            items, total = await pipe.execute()
        return [AttemptPublic.model_validate_json(a) for a in items], total

    async def list_sessions(
        self, owner: str, offset: int, limit: int
    ) -> tuple[list[ProblemSummary], int]:
        """The owner's sessions, newest first. Expired ones are dropped from the index."""
        index = owner_sessions_key(owner)
        ids = await self.redis.zrevrange(index, offset, offset + limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hmget(session_key(sid), SUMMARY_FIELDS)
            pipe.zcard(index)
            *rows, total = await pipe.execute()
        gone = [sid for sid, row in zip(ids, rows, strict=True) if row[0] is None]
        if gone:
            await self.redis.zrem(index, *gone)
        return [_summary(row) for row in rows if row[0] is not None], total - len(gone)

    async def events(self, sid: str, after: str, block_ms: int) -> list[Event]:
        """Events after the stream id `after` ("0" for all), waiting up to block_ms."""
        reply = await self.redis.xread(
            {events_key(sid): after},
            count=100,
            block=block_ms or None,  # 0 would wait forever
        )
        if not reply:
            return []
        return [Event(id=i, type=f["type"], data=f["data"]) for i, f in reply[0][1]]

    async def open_stream(self, owner: str, stream_id: str, limit: int) -> None:
        """Take (or renew) a place among the owner's open event streams; raises
        TooManyStreams. Renew at least every STREAM_LEASE_S, and close_stream at the end."""
        args = [stream_id, time.time(), STREAM_LEASE_S, limit]
        if not await self._open_stream(keys=[owner_streams_key(owner)], args=args):
            raise TooManyStreams(limit)

    async def close_stream(self, owner: str, stream_id: str) -> None:
        await self.redis.zrem(owner_streams_key(owner), stream_id)

    # -- gateway: cancel ------------------------------------------------------------------------
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

    # -- comparisons ----------------------------------------------------------------------------
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

    # -- workers --------------------------------------------------------------------------------
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

    async def add_event(self, sid: str, type_: str, data: dict[str, Any]) -> None:
        """An event outside the scripts (a note for the client; no state changes with it)."""
        fields = {"type": type_, "data": json.dumps(data)}
        await self.redis.xadd(
            events_key(sid), fields, maxlen=self.config.events_maxlen, approximate=True
        )

    async def cancel_requested(self, sid: str) -> bool:
        return await self.redis.hget(session_key(sid), "cancel_requested") == "1"

    async def finish(self, sid: str, lease: str, status: str, error: str = "") -> bool:
        """End a session the worker holds: solved, exhausted, cancelled or failed."""
        return await self._end(sid, lease, status, error)

    async def requeue(self, sid: str, lease: str, job: Job, jobs: str) -> bool:
        """Give a held session back to the queue: a new job on the stream `jobs` replaces `job`.
        False: the lease was not ours (the job is left to its new holder)."""
        keys = [session_key(sid), events_key(sid), jobs]
        args = [lease, self.config.events_maxlen, JOB_GROUP, job.id]
        return bool(await self._requeue(keys=keys, args=args))

    async def heartbeat(self, consumer: str) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(WORKERS_KEY, {consumer: now})
            pipe.zremrangebyscore(WORKERS_KEY, 0, now - WORKER_FORGET_S)
            await pipe.execute()

    async def forget_worker(self, consumer: str) -> None:
        await self.redis.zrem(WORKERS_KEY, consumer)

    # -- health and metrics ---------------------------------------------------------------------
    async def workers_alive(self, within_s: float) -> int:
        return await self.redis.zcount(WORKERS_KEY, time.time() - within_s, "+inf")

    async def stats(self, models: tuple[str, ...], within_s: float) -> Stats:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(STATS_KEY)
            for model in models:
                pipe.xlen(jobs_key(model))
            counters, *depths = await pipe.execute()
        pending = {m: await _pending(self.redis, jobs_key(m)) for m in models}
        return Stats(
            counters={k: float(v) for k, v in counters.items()},
            queue_depth=dict(zip(models, depths, strict=True)),
            queue_pending=pending,
            workers_alive=await self.workers_alive(within_s),
        )


async def _pending(redis: Redis, key: str) -> int:
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
        self._touch = redis.register_script(_TOUCH)
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
        return await _pending(self.redis, self.key)

    async def leave(self, consumer: str) -> None:
        """Remove an idle consumer from the group (only when it holds no job)."""
        pending = await self.redis.xpending_range(
            self.key, JOB_GROUP, min="-", max="+", count=1, consumername=consumer
        )
        if not pending:
            await self.redis.xgroup_delconsumer(self.key, JOB_GROUP, consumer)
