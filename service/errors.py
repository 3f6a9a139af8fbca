"""Typed errors → HTTP answers. Every error body is an `ErrorBody` that names the field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from sdpo.schemas import ErrorBody, FieldError
from sdpo.store import (
    IdempotencyConflict,
    QueueFull,
    QuotaExceeded,
    ReplayExpired,
    TooManyStreams,
)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}
_UNION_TAGS = {"io_tests", "function_tests", "checker"}  # pydantic puts the verifier's tag in loc


class FieldInvalid(Exception):
    """A request field that passed the schema but not the server's own rules (→ 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'verifier', 'io_tests', 'tests', 0, 'output') → 'verifier.tests[0].output'."""
    parts = list(loc)
    if parts[:1] == ["body"] and len(parts) == 2 and isinstance(parts[1], int):
        return "body"  # malformed JSON: loc holds the character position
    if parts and parts[0] == "body" and len(parts) > 1:
        parts = parts[1:]
    path = ""
    for i, part in enumerate(parts):
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (part in _UNION_TAGS and i > 0 and parts[i - 1] == "verifier"):
            path += f".{part}" if path else str(part)
    return path or "body"


def error_response(
    status: int, message: str, fields: list[FieldError] | None = None, headers: dict | None = None
) -> JSONResponse:
    body = ErrorBody(error=CODES.get(status, "error"), message=message, fields=fields or [])
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _message(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return f"invalid JSON: {error.get('ctx', {}).get('error', 'cannot parse')}"
    return str(error.get("msg", "invalid"))


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [
        FieldError(field=field_path(e.get("loc", ())), message=_message(e)) for e in exc.errors()
    ]
    message = "; ".join(f"{f.field}: {f.message}" for f in fields[:3]) or "invalid request"
    return error_response(422, message, fields)


async def _field_invalid(_: Request, exc: FieldInvalid) -> JSONResponse:
    field = FieldError(field=exc.field, message=exc.message)
    return error_response(422, str(exc), [field])


async def _http(_: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


def _retry_later(message: str):
    async def handler(request: Request, _: Exception) -> JSONResponse:
        retry_after = str(request.app.state.settings.retry_after_s)
        return error_response(429, message, headers={"Retry-After": retry_after})

    return handler


async def _conflict(_: Request, __: IdempotencyConflict) -> JSONResponse:
    field = FieldError(field="Idempotency-Key", message="already used with a different body")
    return error_response(409, "Idempotency-Key was already used with a different body", [field])


async def _replay_expired(_: Request, __: ReplayExpired) -> JSONResponse:
    message = "the sessions of this Idempotency-Key have expired; retry with a new key"
    return error_response(409, message, [FieldError(field="Idempotency-Key", message=message)])


async def _too_many_streams(request: Request, exc: TooManyStreams) -> JSONResponse:
    retry_after = str(request.app.state.settings.retry_after_s)
    field = FieldError(field="events", message=str(exc))
    return error_response(429, str(exc), [field], headers={"Retry-After": retry_after})


async def _redis_down(request: Request, exc: RedisError) -> JSONResponse:
    retry_after = str(request.app.state.settings.retry_after_s)
    message = f"the session store is unavailable ({type(exc).__name__}); retry shortly"
    return error_response(503, message, headers={"Retry-After": retry_after})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(FieldInvalid, _field_invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(QueueFull, _retry_later("the job queue is full; retry later"))
    app.add_exception_handler(
        QuotaExceeded, _retry_later("this API key has too many queued or running sessions")
    )
    app.add_exception_handler(IdempotencyConflict, _conflict)
    app.add_exception_handler(ReplayExpired, _replay_expired)
    app.add_exception_handler(TooManyStreams, _too_many_streams)
    app.add_exception_handler(RedisError, _redis_down)


def documented(*codes: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for these error statuses."""
    return {code: {"model": ErrorBody} for code in codes}
