"""Request-body cap (413), as plain ASGI so that GETs pay nothing for it."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class BodyLimit:
    """413 for bodies over max_bytes: by Content-Length when sent, else by counting the chunks
    (buffered up to the limit, then replayed to the app)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _reject(send, 400, "Content-Length must be a number")
            if int(length) > self.max_bytes:
                return await _reject(send, 413, self._too_large())
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await _reject(send, 413, self._too_large())
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        return await self.app(scope, _replay(messages, receive), send)

    def _too_large(self) -> str:
        return f"the request body exceeds {self.max_bytes} bytes"


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
