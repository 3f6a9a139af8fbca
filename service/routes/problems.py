"""/v1/problems and /v1/best-of-k: create, read, page through attempts, stream, cancel."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from sdpo.schemas import (
    TERMINAL,
    AttemptPublic,
    BestOfKCreate,
    Page,
    ProblemCreate,
    ProblemPublic,
    ProblemSummary,
    Status,
    StepPublic,
)
from sdpo.settings import Settings
from sdpo.store import CreateRequest, ReplayExpired, SessionState, Store

from ..deps import CurrentCaller, OwnedProblem, OwnedSnapshot, SettingsDep, StoreDep
from ..errors import FieldInvalid, documented
from ..limits import limit_problem

router = APIRouter(prefix="/v1", tags=["problems"])

SSE_BLOCK_MS = 10_000  # one Redis wait of an event stream; its connection is held meanwhile
SSE_PING_S = 15

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="Retrying a POST with the same key returns the same session(s).",
    ),
]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        pattern=r"^\d{1,20}(-\d{1,20})?$",
        description="Resume after this event id (EventSource sends it on reconnection).",
    ),
]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Items to skip.")]


def problem_response(state: SessionState, steps: list[StepPublic], status: int = 200) -> Response:
    """Serialised once by pydantic-core (the status read is the hottest path)."""
    return Response(
        state.public(steps).model_dump_json(), status_code=status, media_type="application/json"
    )


def check_model(model: str, settings: Settings) -> None:
    if model not in settings.models:
        served = ", ".join(settings.models)
        raise FieldInvalid("model", f"unknown model {model!r}; this server has: {served}")


async def create_one(store: Store, request: CreateRequest) -> Response:
    created = await store.create(request)
    if (snapshot := await store.snapshot(created.ids[0])) is None:
        raise ReplayExpired  # only a replay can miss its session
    state, steps = snapshot
    response = problem_response(state, steps, status=202)
    response.headers["Location"] = f"/v1/problems/{state.id}"
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@router.post(
    "/problems",
    status_code=202,
    response_model=ProblemPublic,
    responses=documented(400, 401, 409, 413, 422, 429),
    summary="Submit a problem",
)
async def create_problem(
    body: ProblemCreate,
    caller: CurrentCaller,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue a session: the strategy samples attempts, the sandbox judges them against the
    verifier, and (for sdpo) the model learns from the feedback, until a pass or the budget."""
    check_model(body.model, settings)
    body = limit_problem(body, settings)
    request = CreateRequest(caller.tenant, [body], "problems", idempotency_key=idempotency_key)
    return await create_one(store, request)


@router.post(
    "/best-of-k",
    status_code=202,
    response_model=ProblemPublic,
    responses=documented(400, 401, 409, 413, 422, 429),
    summary="Submit a problem to the best-of-k baseline",
)
async def create_best_of_k(
    body: BestOfKCreate,
    caller: CurrentCaller,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Independent samples from the frozen model until one passes or the budget is spent."""
    check_model(body.model, settings)
    problem = limit_problem(body.as_problem(), settings)
    request = CreateRequest(caller.tenant, [problem], "best-of-k", idempotency_key=idempotency_key)
    return await create_one(store, request)


@router.get(
    "/problems",
    response_model=Page[ProblemSummary],
    responses=documented(401, 422),
    summary="List your problems",
)
async def list_problems(
    caller: CurrentCaller,
    store: StoreDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Annotated[
        list[Status] | None,
        Query(description="Only sessions in these statuses (repeat the parameter for more)."),
    ] = None,
) -> Page[ProblemSummary]:
    """The caller's sessions, newest first; `total` counts those that match."""
    items, total = await store.list_sessions(caller.tenant, offset, limit, frozenset(status or ()))
    return Page[ProblemSummary](items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/problems/{problem_id}",
    response_model=ProblemPublic,
    responses=documented(401, 404, 422),
    summary="Get a problem's status",
)
async def get_problem(snapshot: OwnedSnapshot) -> Response:
    """Status, attempts used, the first success and its solution, and per-step metrics (loss,
    teacher–student divergence, pass count, phase seconds)."""
    return problem_response(*snapshot)


@router.get(
    "/problems/{problem_id}/attempts",
    response_model=Page[AttemptPublic],
    responses=documented(401, 404, 422),
    summary="Page through the attempts",
)
async def list_attempts(
    state: OwnedProblem,
    store: StoreDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[AttemptPublic]:
    """Each attempt's text, extracted code, verdict and feedback, in sampling order."""
    items, total = await store.attempts(state.id, offset, limit)
    return Page[AttemptPublic](items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/problems/{problem_id}/events",
    response_class=EventSourceResponse,
    summary="Stream progress (Server-Sent Events)",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-Sent Events: `status`, `step` (a StepPublic) and a final "
            "`end`. Each has an id; reconnect with Last-Event-ID to resume after it.",
        },
        **documented(401, 404, 422, 429),
    },
)
async def problem_events(
    state: OwnedProblem,
    store: StoreDep,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """The session's progress as Server-Sent Events, from the start or after Last-Event-ID.
    The stream ends after the `end` event, or after event_stream_max_s without one (then
    reconnect with Last-Event-ID). Each API key may hold event_streams_per_tenant streams open
    at once (429 beyond)."""
    place = StreamPlace(store, state.owner, uuid.uuid4().hex, settings.event_streams_per_tenant)
    await place.take()
    events = _events(store, state, last_event_id or "0", place, settings.event_stream_max_s)
    return EventSourceResponse(events, ping=SSE_PING_S)


@dataclass(frozen=True)
class StreamPlace:
    """One open event stream, counted against its owner's limit while it lasts."""

    store: Store
    owner: str
    stream_id: str
    limit: int

    async def take(self) -> None:
        await self.store.open_stream(self.owner, self.stream_id, self.limit)

    async def give_back(self) -> None:
        await self.store.close_stream(self.owner, self.stream_id)


async def _events(
    store: Store, state: SessionState, after: str, place: StreamPlace, max_s: float
) -> AsyncIterator[ServerSentEvent]:
    finished = state.status in TERMINAL  # then every event is already written
    deadline = time.monotonic() + max_s
    try:
        while True:
            wait_ms = min(SSE_BLOCK_MS, max(1, int((deadline - time.monotonic()) * 1000)))
            events = await store.events(state.id, after, 0 if finished else wait_ms)
            for event in events:
                yield ServerSentEvent(data=event.data, event=event.type, id=event.id)
                after = event.id
                if event.type == "end":
                    return
            if finished or time.monotonic() >= deadline:
                return  # past the deadline the client resumes after `after`
            await place.take()  # renewed once per wait, well within STREAM_LEASE_S
            if not events:
                current = await store.get(state.id)
                finished = current is None or current.status in TERMINAL
    finally:
        await asyncio.shield(place.give_back())


@router.post(
    "/problems/{problem_id}/cancel",
    status_code=202,
    response_model=ProblemPublic,
    responses=documented(401, 404, 409, 422),
    summary="Cancel a problem",
)
async def cancel_problem(state: OwnedProblem, store: StoreDep) -> Response:
    """Stop a session. A queued one ends at once; a running one stops at the next phase
    boundary (its status shows cancel_requested until then)."""
    before = await store.cancel(state.id)
    if before in TERMINAL and before != "cancelled":
        raise HTTPException(409, f"the session is already {before}")
    state, steps = await store.snapshot(state.id)
    return problem_response(state, steps, status=202)
