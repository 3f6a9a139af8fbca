"""The store's records, typed: the session hash, what is created, claimed and committed, and
the configuration of the store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..schemas import (
    AttemptPublic,
    Budget,
    CompareCreate,
    ProblemCreate,
    ProblemPublic,
    ProblemSummary,
    Solution,
    StepPublic,
)


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


def new_session_hash(sid: str, owner: str, problem: ProblemCreate, now: float) -> dict[str, str]:
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


class SnapshotDocument(BaseModel):
    session: dict[str, str]
    steps: list[StepPublic]


SUMMARY_FIELDS = (
    "id",
    "status",
    "strategy",
    "attempts_used",
    "max_attempts",
    "first_success_attempt",
    "compare_id",
    "created_at",
    "finished_at",
)


def summary(values: list[str | None]) -> ProblemSummary:
    h = dict(zip(SUMMARY_FIELDS, values, strict=True))
    return ProblemSummary(
        id=h["id"],
        status=h["status"],
        strategy=h["strategy"],
        attempts_used=int(h["attempts_used"] or 0),
        max_attempts=int(h["max_attempts"]),
        first_success_attempt=_int(h["first_success_attempt"]),
        compare_id=h["compare_id"] or None,
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
class WorkerSlots:
    """What a worker's last heartbeat said: sessions running, of at most `most` at once (its
    SDPO_WORKER_MAX_SESSIONS, or fewer where its memory admits fewer), and the bytes of memory
    its sessions reserved of its budget for them."""

    running: int
    most: int
    memory_reserved: int = 0
    memory_budget: int = 0

    def encode(self) -> str:
        return f"{self.running}/{self.most}/{self.memory_reserved}/{self.memory_budget}"

    @classmethod
    def decode(cls, value: str | None) -> WorkerSlots:
        numbers = [int(part or 0) for part in (value or "0/0").split("/")]
        return cls(*numbers[:4])

    @property
    def free(self) -> int:
        return max(self.most - self.running, 0)


@dataclass(frozen=True)
class Stats:
    counters: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(default_factory=dict)
    queue_pending: dict[str, int] = field(default_factory=dict)
    worker_slots: dict[str, WorkerSlots] = field(default_factory=dict)  # alive workers only

    @property
    def workers_alive(self) -> int:
        return len(self.worker_slots)
