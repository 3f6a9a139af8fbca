"""Every Redis key, prefix and expiry of the store: the only place they are spelled.

All keys of one session share the `{session_id}` hash tag, and all keys of one owner the
`{owner}` tag, so a script over one session (or one owner) touches one Redis Cluster slot.
"""

from __future__ import annotations

PREFIX = "sdpo"
JOB_GROUP = "workers"
WORKERS_KEY = f"{PREFIX}:workers"  # ZSET consumer -> unix time of its last heartbeat
# HASH consumer -> "<sessions>/<max sessions>/<memory reserved>/<memory budget>" (WorkerSlots)
WORKER_SLOTS_KEY = f"{PREFIX}:worker-slots"
STATS_KEY = f"{PREFIX}:stats"  # HASH of counters for /metrics
COMPARE_MIN_TTL_S = 24 * 3600  # a comparison outlives its sessions' queueing by at least this
WORKER_FORGET_S = 24 * 3600  # heartbeats older than this are dropped from WORKERS_KEY
STREAM_LEASE_S = 30  # an event stream not renewed this long is gone (its gateway died)
PHASE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
QUEUE_WAIT_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


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


def queue_wait_field(part: str) -> str:
    return f"queue_wait:{part}"  # in STATS_KEY: le:<bucket>, sum, count


def recorded_phases(counters: dict[str, float]) -> list[str]:
    return sorted({key.split(":")[1] for key in counters if key.startswith("phase:")})
