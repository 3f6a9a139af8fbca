"""Typed errors and results of the store (the gateway maps the errors to HTTP)."""

from __future__ import annotations

import enum


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
