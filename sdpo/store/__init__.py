"""The Redis store and job queue: the one contract between the gateway and the workers.

Free of FastAPI and torch. One module per concern: `keys` (every key, prefix and expiry, and
nowhere else), `records` (the typed records), `errors`, `scripts` (the Lua scripts in lua/,
read once), `admission` (creating sessions), `sessions` (the Store), `events`, `health`
(heartbeats and statistics) and `queue` (the job stream).

Invariants:
* A session's attempt and step records and its counters change only inside the step script,
  which checks the worker's lease and the step index: a step commits once, in order, within the
  budget, by the worker that holds the session.
* Every script is safe to run twice with the same arguments (redis-py retries a call whose
  reply was lost): a claim's lease is its token, and a step commits once.
* Events go to a capped stream per session (not pub/sub, which loses messages), so a client
  resumes from its Last-Event-ID.
* The statistics hash is bookkeeping for /metrics, updated after the fact; it may lag a crash.
"""

from .errors import (
    CommitResult,
    IdempotencyConflict,
    QueueFull,
    QuotaExceeded,
    ReplayExpired,
    TooManyStreams,
)
from .keys import (
    COMPARE_MIN_TTL_S,
    JOB_GROUP,
    PHASE_BUCKETS_S,
    PREFIX,
    QUEUE_WAIT_BUCKETS_S,
    STATS_KEY,
    STREAM_LEASE_S,
    WORKER_FORGET_S,
    WORKERS_KEY,
    attempts_key,
    compare_key,
    events_key,
    idempotency_key,
    jobs_key,
    owner_active_key,
    owner_sessions_key,
    owner_streams_key,
    phase_field,
    queue_wait_field,
    recorded_phases,
    session_key,
    session_keys,
    steps_key,
)
from .queue import Job, JobQueue
from .records import (
    SUMMARY_FIELDS,
    Claim,
    CompareRecord,
    Created,
    CreateRequest,
    Event,
    SessionState,
    Stats,
    StepCommit,
    StoreConfig,
    WorkerSlots,
)
from .sessions import Store

__all__ = [
    "COMPARE_MIN_TTL_S",
    "JOB_GROUP",
    "PHASE_BUCKETS_S",
    "QUEUE_WAIT_BUCKETS_S",
    "PREFIX",
    "STATS_KEY",
    "STREAM_LEASE_S",
    "SUMMARY_FIELDS",
    "WORKERS_KEY",
    "WORKER_FORGET_S",
    "Claim",
    "CommitResult",
    "CompareRecord",
    "CreateRequest",
    "Created",
    "Event",
    "IdempotencyConflict",
    "Job",
    "JobQueue",
    "QueueFull",
    "QuotaExceeded",
    "ReplayExpired",
    "SessionState",
    "Stats",
    "WorkerSlots",
    "StepCommit",
    "Store",
    "StoreConfig",
    "TooManyStreams",
    "attempts_key",
    "compare_key",
    "events_key",
    "idempotency_key",
    "jobs_key",
    "owner_active_key",
    "owner_sessions_key",
    "owner_streams_key",
    "phase_field",
    "queue_wait_field",
    "recorded_phases",
    "session_key",
    "session_keys",
    "steps_key",
]
