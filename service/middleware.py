"""Request-body cap (413), as plain ASGI so that GETs pay nothing for it.

A client that sends its whole body before it reads the answer (most do, without `Expect:
100-continue`) is reset mid-send if the server answers and closes early: it never sees the 413.
So an oversized body is read and discarded, up to DRAIN_BYTES, before the answer goes out. A
client that asked for 100-continue gets the 413 at once and sends nothing.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
DRAIN_BYTES = 64 * 1024 * 1024  # past this, an oversized body is cut off (the client sees a reset)


class BodyLimit:
    """413 for bodies over max_bytes: by Content-Length when sent, else by counting the chunks
    (buffered up to the limit, then replayed to the app)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _reject(send, 400, "Content-Length must be a number")
            if int(length) > self.max_bytes:
                if headers.get(b"expect", b"").lower() != b"100-continue":
                    await _drain(receive, DRAIN_BYTES)
                return await _reject(send, 413, self._too_large())
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)
            if size > self.max_bytes:
                if more:
                    await _drain(receive, DRAIN_BYTES - size)
                return await _reject(send, 413, self._too_large())
            if not more:
                break
        return await self.app(scope, _replay(messages, receive), send)

    def _too_large(self) -> str:
        return f"the request body exceeds {self.max_bytes} bytes"


async def _drain(receive: Receive, limit_bytes: int) -> None:
    """Read and discard the rest of a request body, up to limit_bytes."""
    size = 0
    while size <= limit_bytes:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        size += len(message.get("body", b""))


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()

    return replayed


async def _reject(send: Send, status: int, message: str) -> None:
    code = "body_too_large" if status == 413 else "bad_request"
    field = [{"field": "body", "message": message}]
    body = json.dumps({"error": code, "message": message, "fields": field}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
