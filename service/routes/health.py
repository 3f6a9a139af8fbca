"""Liveness, readiness and Prometheus metrics (no authentication: they reveal no session)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from sdpo.schemas import Health, Readiness

from ..deps import SettingsDep, StoreDep
from ..metrics import render

router = APIRouter(tags=["health"])

ALIVE_HEARTBEATS = 3  # a worker silent for this many heartbeat periods is not counted


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The gateway process is up."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Readiness",
)
async def readyz(store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """Ready when Redis answers and at least one worker sent a heartbeat recently; says how
    many sessions the workers run and how many more they could start."""
    try:
        await store.redis.ping()
        slots = await store.worker_slots(settings.heartbeat_s * ALIVE_HEARTBEATS)
        redis_ok = True
    except RedisError:
        redis_ok, slots = False, {}
    ready = Readiness(
        ready=redis_ok and len(slots) > 0,
        redis=redis_ok,
        workers=len(slots),
        sessions_running=sum(s.running for s in slots.values()),
        free_slots=sum(s.free for s in slots.values()),
        memory_reserved_bytes=sum(s.memory_reserved for s in slots.values()),
        memory_budget_bytes=sum(s.memory_budget for s in slots.values()),
    )
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(store: StoreDep, settings: SettingsDep) -> Response:
    """Prometheus text format."""
    stats = await store.stats(settings.models, settings.heartbeat_s * ALIVE_HEARTBEATS)
    return Response(render(stats), media_type=CONTENT_TYPE_LATEST)
