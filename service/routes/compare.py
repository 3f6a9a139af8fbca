"""/v1/compare: one problem, several strategies, the same budget and seeds, side by side."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from sdpo.schemas import (
    TERMINAL,
    CompareCreate,
    ComparePublic,
    CompareRun,
    DiscoveryPoint,
    StrategyResult,
)
from sdpo.store import CompareRecord, CreateRequest, SessionState, Store

from ..deps import MAX_ID_CHARS, CurrentCaller, SettingsDep, StoreDep
from ..errors import documented
from ..limits import limit_compare
from .problems import IdempotencyKey, check_model

router = APIRouter(prefix="/v1", tags=["compare"])


def discovery_curve(firsts: list[int | None], max_attempts: int) -> list[DiscoveryPoint]:
    """discovery@k = the fraction of runs whose first pass came by attempt k: a point wherever
    it changes, and one at the budget."""
    if not firsts:
        return []
    solved = sorted(f for f in firsts if f is not None)
    points = [
        DiscoveryPoint(k=k, rate=sum(f <= k for f in solved) / len(firsts))
        for k in dict.fromkeys(solved)
    ]
    if not points or points[-1].k != max_attempts:
        points.append(DiscoveryPoint(k=max_attempts, rate=len(solved) / len(firsts)))
    return points


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def strategy_result(name: str, runs: list[CompareRun], max_attempts: int) -> StrategyResult:
    solved = [r for r in runs if r.solved]
    return StrategyResult(
        strategy=name,
        runs=runs,
        solved_rate=len(solved) / len(runs),
        mean_attempts_to_success=_mean([r.first_success_attempt for r in solved]),
        mean_seconds_to_success=_mean([r.first_success_s for r in solved if r.first_success_s]),
        discovery=discovery_curve([r.first_success_attempt for r in runs], max_attempts),
    )


def compare_view(record: CompareRecord, sessions: list[SessionState | None]) -> ComparePublic:
    by_strategy: dict[str, list[CompareRun]] = {}
    for run, state in zip(record.runs, sessions, strict=True):
        if state is None:  # expired
            continue
        by_strategy.setdefault(run["strategy"], []).append(
            CompareRun(
                session_id=state.id,
                seed=state.seed,
                status=state.status,
                solved=state.status == "solved",
                attempts_used=state.attempts_used,
                first_success_attempt=state.first_success_attempt,
                first_success_s=state.first_success_s,
            )
        )
    statuses = {s.status for s in sessions if s is not None}
    overall = "done" if statuses <= TERMINAL else "queued" if statuses == {"queued"} else "running"
    return ComparePublic(
        id=record.id,
        status=overall,
        budget=record.budget,
        seed=record.seed,
        repeats=record.repeats,
        created_at=record.created_at,
        strategies=[
            strategy_result(name, runs, record.budget.max_attempts)
            for name, runs in by_strategy.items()
        ],
    )


async def _load(store: Store, compare_id: str, tenant: str) -> ComparePublic:
    record = await store.get_compare(compare_id) if len(compare_id) <= MAX_ID_CHARS else None
    if record is None or record.owner != tenant:
        raise HTTPException(404, f"no comparison with id {compare_id[:MAX_ID_CHARS]!r}")
    sessions = await store.sessions([run["session_id"] for run in record.runs])
    return compare_view(record, sessions)


@router.post(
    "/compare",
    status_code=202,
    response_model=ComparePublic,
    responses=documented(400, 401, 409, 413, 422, 429),
    summary="Compare strategies on one problem",
)
async def create_compare(
    body: CompareCreate,
    caller: CurrentCaller,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> ComparePublic:
    """Run several strategies (default sdpo and best_of_k) on the same problem, budget and
    seeds; `repeats` runs per strategy give a discovery curve."""
    check_model(body.model, settings)
    body = limit_compare(body, settings)
    request = CreateRequest(
        caller.tenant, body.problems(), "compare", compare=body, idempotency_key=idempotency_key
    )
    created = await store.create(request)
    return await _load(store, created.compare_id, caller.tenant)


@router.get(
    "/compare/{compare_id}",
    response_model=ComparePublic,
    responses=documented(401, 404),
    summary="Get a comparison",
)
async def get_compare(
    compare_id: Annotated[str, Path(description="The id that POST /v1/compare returned.")],
    caller: CurrentCaller,
    store: StoreDep,
) -> ComparePublic:
    """The strategies side by side: solved, attempts and seconds to the first success, and
    discovery@k."""
    return await _load(store, compare_id, caller.tenant)
