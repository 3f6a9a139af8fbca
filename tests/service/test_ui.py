"""/ui without a browser: the page and every file it loads are served from the package with a
Content-Security-Policy that forbids inline scripts and other origins; no key is needed for the
files (they hold no session data), and the API they call still asks for one."""

import re

import httpx
import pytest

from sdpo.settings import Settings
from service.routes.ui import UI_DIR

from .conftest import KEY_A, gateway_in_thread


@pytest.fixture(scope="module")
def gateway(redis_server):
    with gateway_in_thread(Settings(redis_url=redis_server.url, api_keys=KEY_A)) as url:
        yield url


def test_ui_redirects_to_the_page_with_a_strict_policy(gateway):
    with httpx.Client(base_url=gateway) as client:
        for path in ("/", "/ui"):
            moved = client.get(path)
            assert moved.status_code == 307 and moved.headers["location"] == "/ui/"
        page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["default-src"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # no inline script: every script is a file


def test_every_file_the_page_loads_is_served(gateway):
    page = (UI_DIR / "index.html").read_text()
    scripts = sorted(UI_DIR.glob("js/**/*.js"))
    references = re.findall(r'(?:src|href)="([^"#]+)"', page)
    imports = [
        (script.parent / name).resolve().relative_to(UI_DIR.resolve()).as_posix()
        for script in scripts
        for name in re.findall(r'from "(\.[^"]+)"', script.read_text())
    ]
    assert "vendor/uPlot.iife.min.js" in references and "vendor/highlight-core.min.js" in imports
    with httpx.Client(base_url=f"{gateway}/ui/") as client:
        for path in {*references, *imports}:
            response = client.get(path)
            assert response.status_code == 200, path
            assert "content-security-policy" in response.headers, path
        assert client.get("../v1/problems").status_code == 401  # the data still needs a key
        assert client.get("js/missing.js").status_code == 404


def test_vendored_libraries_carry_their_licences():
    vendor = UI_DIR / "vendor"
    assert "MIT License" in (vendor / "uPlot.LICENSE").read_text()
    assert "BSD 3-Clause" in (vendor / "highlight.LICENSE").read_text()
