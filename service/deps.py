"""Dependencies with names: who is calling (CurrentCaller), the store (StoreDep), the settings
(SettingsDep) and a session the caller owns (OwnedProblem, OwnedSnapshot): the ownership
check lives here, once. Another tenant's session is a 404, exactly like a missing one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPBearer

from sdpo.schemas import StepPublic
from sdpo.settings import LOCAL_TENANT, Settings
from sdpo.store import SessionState, Store

MAX_ID_CHARS = 64


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _store(request: Request) -> Store:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Store, Depends(_store)]


@dataclass(frozen=True)
class Caller:
    tenant: str


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


class ApiKeyBearer(HTTPBearer):
    """`Authorization: Bearer <key>` → the caller's tenant. One dependency that is also the
    OpenAPI security scheme (the status read is the hottest path: few dependencies)."""

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        settings: Settings = request.app.state.settings
        if not settings.auth_enabled:
            return Caller(LOCAL_TENANT)
        credentials = await super().__call__(request)
        if credentials is None:
            raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        tenant = settings.tenant_for(credentials.credentials)
        if tenant is None:
            raise _unauthorized("invalid API key")
        return Caller(tenant)


current_caller = ApiKeyBearer(
    auto_error=False, description="An API key from SDPO_API_KEYS (none needed without keys)."
)
CurrentCaller = Annotated[Caller, Depends(current_caller)]
ProblemId = Annotated[str, Path(description="The session id that POST returned.")]


def _not_found(problem_id: str) -> HTTPException:
    return HTTPException(404, f"no problem with id {problem_id[:MAX_ID_CHARS]!r}")


async def owned_problem(problem_id: ProblemId, request: Request, caller: CurrentCaller):
    store: Store = request.app.state.store
    state = await store.get(problem_id) if len(problem_id) <= MAX_ID_CHARS else None
    if state is None or state.owner != caller.tenant:
        raise _not_found(problem_id)
    return state


async def owned_snapshot(problem_id: ProblemId, request: Request, caller: CurrentCaller):
    store: Store = request.app.state.store
    snapshot = await store.snapshot(problem_id) if len(problem_id) <= MAX_ID_CHARS else None
    if snapshot is None or snapshot[0].owner != caller.tenant:
        raise _not_found(problem_id)
    return snapshot


OwnedProblem = Annotated[SessionState, Depends(owned_problem)]
OwnedSnapshot = Annotated[tuple[SessionState, list[StepPublic]], Depends(owned_snapshot)]
