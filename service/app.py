"""The FastAPI application: `create_app()` (uvicorn --factory service.app:create_app)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from sdpo import __version__
from sdpo.settings import Settings, get_settings
from sdpo.store import Store, StoreConfig

from . import errors
from .middleware import BodyLimit
from .routes import compare, health, problems, ui

log = logging.getLogger("sdpo.gateway")

DESCRIPTION = """
Test-time SDPO as a service. POST a hard problem with a verifier; workers sample attempts,
judge them in a sandbox, and (for `sdpo`) distil the feedback-conditioned self-teacher into
a per-problem LoRA until an attempt passes or the budget is spent.

Authenticate with `Authorization: Bearer <key>` when the server has API keys. Errors are
`{"error", "message", "fields": [{"field", "message"}]}`.
"""


def connect(url: str) -> Redis:
    # One quick retry: after a Redis restart, a pooled connection fails once before reconnecting.
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), 1)
    return Redis.from_url(
        url,
        decode_responses=True,
        retry=retry,
        retry_on_error=[RedisConnectionError],
        socket_connect_timeout=2.0,
        socket_timeout=30.0,  # above the SSE wait (problems.SSE_BLOCK_MS)
        health_check_interval=30,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.redis_url is None:
        raise ValueError("redis_url: the gateway needs SDPO_REDIS_URL (sdpo serve sets it)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(settings.redis_url)
        app.state.store = Store(redis, StoreConfig.from_settings(settings))
        if not settings.auth_enabled:
            log.warning("no API keys configured: serving loopback only, without authentication")
        try:
            yield
        finally:
            await redis.aclose()

    app = FastAPI(
        title="sdpo-serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.include_router(problems.router)
    app.include_router(compare.router)
    app.include_router(health.router)
    app.include_router(ui.router)
    app.mount("/ui", ui.ui_files(), name="ui")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
