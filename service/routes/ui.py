"""/ui: the web page, static files shipped in the package (service/ui/), reading the same v1
API as any client. No build step: the two vendored libraries are committed as published.

Attempts and feedback are untrusted text; the page only ever inserts them as text, and the
Content-Security-Policy below forbids inline scripts and any other origin as a second wall."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).resolve().parents[1] / "ui"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated by ETag: an upgraded server is seen at once
}

router = APIRouter(include_in_schema=False)


@router.get("/")
@router.get("/ui")
async def to_ui() -> RedirectResponse:
    return RedirectResponse("/ui/")


class UiFiles(StaticFiles):
    """The page's files, each answered with SECURITY_HEADERS."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def ui_files() -> UiFiles:
    return UiFiles(directory=UI_DIR, html=True)
