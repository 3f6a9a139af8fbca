"""A small synchronous client of the REST API (what `sdpo submit/status/compare` use)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from .schemas import (
    TERMINAL,
    AttemptPublic,
    ComparePublic,
    ErrorBody,
    Page,
    ProblemPublic,
)

DEFAULT_URL = "http://127.0.0.1:8000"
TRANSPORT_RETRIES = 3  # safe for POSTs too: they carry an Idempotency-Key


class ApiError(Exception):
    """A 4xx/5xx answer, with the server's error body."""

    def __init__(self, status: int, body: ErrorBody) -> None:
        details = "".join(f"\n  {f.field}: {f.message}" for f in body.fields)
        super().__init__(f"{status} {body.error}: {body.message}{details}")
        self.status, self.body = status, body


@dataclass(frozen=True)
class Event:
    id: str | None
    type: str
    data: str


class SdpoClient:
    def __init__(
        self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> SdpoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(TRANSPORT_RETRIES):
            try:
                response = self.http.request(method, path, **kwargs)
                break
            except httpx.TransportError:
                if attempt == TRANSPORT_RETRIES - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
        if response.status_code >= 400:
            try:
                body = ErrorBody.model_validate(response.json())
            except ValueError:
                body = ErrorBody(error="http_error", message=response.text[:500])
            raise ApiError(response.status_code, body)
        return response.json()

    def _post(self, path: str, body: dict[str, Any], idempotency_key: str | None) -> Any:
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._request("POST", path, json=body, headers=headers)

    def create_problem(self, body: dict[str, Any], idempotency_key: str | None = None):
        return ProblemPublic.model_validate(self._post("/v1/problems", body, idempotency_key))

    def get_problem(self, problem_id: str) -> ProblemPublic:
        return ProblemPublic.model_validate(self._request("GET", f"/v1/problems/{problem_id}"))

    def attempts(self, problem_id: str, offset: int = 0, limit: int = 50) -> Page[AttemptPublic]:
        params = {"offset": offset, "limit": limit}
        data = self._request("GET", f"/v1/problems/{problem_id}/attempts", params=params)
        return Page[AttemptPublic].model_validate(data)

    def cancel(self, problem_id: str) -> ProblemPublic:
        data = self._request("POST", f"/v1/problems/{problem_id}/cancel")
        return ProblemPublic.model_validate(data)

    def create_compare(self, body: dict[str, Any], idempotency_key: str | None = None):
        return ComparePublic.model_validate(self._post("/v1/compare", body, idempotency_key))

    def get_compare(self, compare_id: str) -> ComparePublic:
        return ComparePublic.model_validate(self._request("GET", f"/v1/compare/{compare_id}"))

    def wait(
        self,
        problem_id: str,
        on_update: Callable[[ProblemPublic], None] | None = None,
        poll_s: float = 0.5,
    ) -> ProblemPublic:
        """Poll until the session ends."""
        while True:
            problem = self.get_problem(problem_id)
            if on_update is not None:
                on_update(problem)
            if problem.status in TERMINAL:
                return problem
            time.sleep(poll_s)

    def events(self, problem_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """Server-Sent Events of a session, until its `end` event (or the server closes)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        path = f"/v1/problems/{problem_id}/events"
        with self.http.stream("GET", path, headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, ErrorBody.model_validate(response.json()))
            yield from parse_sse(response.iter_lines())


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """The text/event-stream format: fields per line, events end at a blank line; comments
    (pings) start with ':'."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                event_id = fields.get("id", [None])[-1]
                yield Event(
                    event_id, fields.get("event", ["message"])[-1], "\n".join(fields["data"])
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
