"""The web page in a real browser (headless Chromium driven by selenium) against a real
`sdpo serve` on loopback with API keys: the embedded Redis, the gateway and a worker on the
tests' tiny Llama. Skipped, saying why, where Chromium or its driver is missing (`make test`
installs Debian's chromium and chromium-driver).

Screenshots of the three views go to the test's folder, and also to SDPO_UI_SCREENSHOTS when it
is set (`make ui-screenshots` writes the ones in docs/)."""

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import redis

from sdpo.settings import Settings
from sdpo.store import attempts_key, events_key

from .conftest import (
    KEY_A,
    WORKER_ENV,
    Serve,
    child_env,
    gateway_in_thread,
    problem,
    wait_until,
)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
EVENT_STREAM_MAX_S = 2  # the server closes event streams this often: pages must resume them
MARKUP = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def echo_checker(message: str) -> dict:
    """A checker that fails every answer with `message` as the feedback the teacher sees."""
    return {
        "type": "checker",
        "mode": "answer",
        "code": f"def check(output):\n    return False, {message!r}\n",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("ui-serve")
    env = child_env(
        "",
        SDPO_MODEL=str(tiny_model_dir),
        SDPO_API_KEYS=KEY_A,
        SDPO_EVENT_STREAM_MAX_S=str(EVENT_STREAM_MAX_S),
        **WORKER_ENV,
    )
    env.pop("SDPO_REDIS_URL")
    serve = Serve(folder / "data", env, folder / "serve.log")
    yield serve
    serve.process.terminate()
    try:
        serve.process.wait(30)
    except subprocess.TimeoutExpired:
        serve.process.kill()
        serve.process.wait()


@pytest.fixture(scope="module")
def api(server):
    headers = {"Authorization": f"Bearer {KEY_A}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs chromium and chromedriver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")
    for flag in (*flags, "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    except WebDriverException as error:
        pytest.skip(f"chromium would not start: {error.msg}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> list[Path]:
    folders = [tmp_path_factory.mktemp("screenshots")]
    if target := os.environ.get("SDPO_UI_SCREENSHOTS"):
        folders.append(Path(target))
    return folders


def screenshot(browser, folders: list[Path], name: str) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(folder / f"ui-{name}.png"))


def find(browser, css: str, timeout_s: float = 20):
    return wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, css), timeout_s, css)[0]


def text_of(browser, css: str) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def open_page(browser, server, route: str = "#/sessions", key: str | None = KEY_A) -> None:
    """Open the page in a fresh tab state and give it `key` when it asks for one."""
    browser.get(f"{server.url}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server.url}/ui/{route}")
    if key is not None:
        find(browser, "#api-key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()


def csp_violations(browser) -> list[str]:
    logs = browser.get_log("browser")
    return [e["message"] for e in logs if "Content Security Policy" in e["message"]]


def test_a_wrong_key_gets_a_clear_message_and_the_right_one_the_list(browser, server):
    open_page(browser, server, key=None)
    assert "needs an API key" in find(browser, "#auth-message").text
    find(browser, "#api-key").send_keys("not-the-key")
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    refused = wait_until(lambda: "refused" in text_of(browser, "#auth-message"), 20, "refusal")
    assert refused and "invalid API key" in text_of(browser, "#auth-message")
    assert "not-the-key" not in browser.current_url
    find(browser, "#api-key").send_keys(KEY_A)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    find(browser, "table.sessions")
    assert browser.execute_script("return sessionStorage.getItem('sdpo.apiKey')") == KEY_A
    assert KEY_A not in browser.current_url
    assert csp_violations(browser) == []


def test_a_session_created_through_the_api_appears_in_the_list(browser, server, api, screenshots):
    open_page(browser, server)
    find(browser, "table.sessions")
    sid = api.post("/v1/problems", json=problem(passes=True)).json()["id"]
    row = find(browser, f'tr[data-session="{sid}"]')
    wait_until(lambda: "solved" in row.text, 60, "the row shows solved")
    assert "sdpo" in row.text and "/ 6" in row.text  # strategy and attempts / budget
    Select = pytest.importorskip("selenium.webdriver.support.select").Select
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("cancelled")
    wait_until(lambda: "status=cancelled" in browser.current_url, 10, "filter in the route")
    wait_until(lambda: not browser.find_elements(By.CSS_SELECTOR, f'tr[data-session="{sid}"]'),
               10, "solved session filtered out")  # fmt: skip
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("")
    find(browser, f'tr[data-session="{sid}"]')


def test_the_session_page_updates_live_and_cancels(browser, server, api, screenshots):
    body = problem(budget={"max_attempts": 4000})
    sid = api.post("/v1/problems", json=body).json()["id"]
    open_page(browser, server, f"#/session/{sid}")
    find(browser, "#live.on")
    browser.execute_script("window.__samePage = true")
    steps = lambda: int(text_of(browser, "#step-count") or 0)  # noqa: E731
    first = wait_until(lambda: steps() >= 2 and steps(), 60, "two steps")
    wait_until(lambda: steps() >= first + 3, 60, "more steps, live")
    assert browser.execute_script("return window.__samePage") is True  # no reload: the stream
    assert len(browser.find_elements(By.CSS_SELECTOR, "#phases rect")) >= 5 * (first + 3) // 2
    assert browser.find_elements(By.CSS_SELECTOR, "#curves canvas")
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "tr.attempt")) >= 2 * first,
               30, "attempt rows")  # fmt: skip
    screenshot(browser, screenshots, "session")
    browser.find_element(By.ID, "cancel").click()
    wait_until(lambda: "cancelled" in text_of(browser, ".session-header"), 30, "cancelled")
    wait_until(lambda: text_of(browser, "#live") == "finished", 30, "stream ended")
    shown = int(text_of(browser, "#budget-text").split("/")[0])
    assert shown == api.get(f"/v1/problems/{sid}").json()["attempts_used"]
    assert csp_violations(browser) == []


def _finished(api, sid: str) -> dict:
    return wait_until(
        lambda: (p := api.get(f"/v1/problems/{sid}").json())["status"] == "exhausted" and p,
        60,
        "exhausted",
    )


def test_clicking_an_attempt_shows_its_code_and_feedback(browser, server, api):
    body = problem(verifier=echo_checker("expected 42, got something else"))
    sid = api.post("/v1/problems", json=body).json()["id"]
    _finished(api, sid)
    open_page(browser, server, f"#/session/{sid}")
    find(browser, 'tr.attempt[data-attempt="3"]').click()
    detail = find(browser, '.attempt-detail[data-attempt="3"]')
    feedback = detail.find_element(By.CSS_SELECTOR, ".feedback").text
    assert "expected 42, got something else" in feedback
    assert "Attempt 3 (step 1)" in detail.text


def test_markup_in_an_attempt_and_its_feedback_stays_text(browser, server, api):
    body = problem(verifier=echo_checker(MARKUP))
    sid = api.post("/v1/problems", json=body).json()["id"]
    _finished(api, sid)
    # The tiny model cannot be asked to write markup, so its first attempt's record is given
    # the text and code a hostile model could have written (the record's own format).
    with redis.Redis.from_url(server.redis_url(), decode_responses=True) as r:
        attempt = api.get(f"/v1/problems/{sid}/attempts", params={"limit": 1}).json()["items"][0]
        attempt.update(text=f"```python\n{MARKUP}\n```", code=f"x = '{MARKUP}'")
        r.lset(attempts_key(sid), 0, httpx.Response(200, json=attempt).text)
    open_page(browser, server, f"#/session/{sid}")
    find(browser, 'tr.attempt[data-attempt="1"]').click()
    detail = find(browser, '.attempt-detail[data-attempt="1"]')
    assert MARKUP in detail.find_element(By.CSS_SELECTOR, ".feedback").text
    assert MARKUP in detail.find_element(By.CSS_SELECTOR, "pre.code").text
    assert browser.execute_script("return window.__xss") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#view script, #view img")


def test_the_compare_view_draws_one_curve_per_strategy(browser, server, api, screenshots):
    strategies = ["sdpo", "best_of_k", "multi_turn"]
    sampling = {"num_generations": 2, "max_completion_length": 8}
    passes_sometimes = {
        "type": "checker",
        "mode": "answer",
        "code": "def check(output):\n    return len(output) % 3 == 0\n",
    }
    body = {
        "prompt": "Write anything.",
        "verifier": passes_sometimes,
        "strategies": strategies,
        "budget": {"max_attempts": 8},
        "repeats": 3,
        "params": {name: sampling for name in strategies},
    }
    cid = api.post("/v1/compare", json=body).json()["id"]
    open_page(browser, server, f"#/compare/{cid}")
    wait_until(lambda: "done" in text_of(browser, "#compare-summary"), 120, "comparison done")
    legend = "#discovery .u-legend .u-label"
    labels = wait_until(
        lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, legend)][1:], 20, "legend"
    )
    assert labels == strategies  # one curve per strategy (the first label is the x axis)
    assert find(browser, "#discovery").get_attribute("data-series") == "3"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.compare tr[data-strategy]")
    assert [r.get_attribute("data-strategy") for r in rows] == strategies
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.compare .run a")) == 9
    screenshot(browser, screenshots, "compare")
    assert csp_violations(browser) == []
    browser.get(f"{server.url}/ui/#/sessions")  # the runs are in the list, linked to it
    links = f'a[href="#/compare/{cid}"]'
    found = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, links), 20, "compare links")
    assert len(found) == 9
    screenshot(browser, screenshots, "sessions")


def test_a_closed_stream_resumes_after_the_last_event(browser, server, api):
    """The server closes every stream after EVENT_STREAM_MAX_S: the page reconnects with
    Last-Event-ID each time, and draws every step and attempt exactly once."""
    sid = api.post("/v1/problems", json=problem(budget={"max_attempts": 4000})).json()["id"]
    open_page(browser, server, f"#/session/{sid}")
    connections = lambda: int(find(browser, "#live").get_attribute("data-connections") or 0)  # noqa: E731
    wait_until(lambda: connections() >= 3, 60, "two reconnections")
    api.post(f"/v1/problems/{sid}/cancel")
    wait_until(lambda: text_of(browser, "#live") == "finished", 30, "stream ended")
    final = api.get(f"/v1/problems/{sid}").json()
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.attempt")
    assert int(text_of(browser, "#step-count")) == len(final["steps"]) >= 3
    numbers = [int(row.get_attribute("data-attempt")) for row in rows]
    assert numbers == list(range(1, final["attempts_used"] + 1))
    with redis.Redis.from_url(server.redis_url(), decode_responses=True) as r:
        written = r.xlen(events_key(sid))
    assert int(find(browser, "#live").get_attribute("data-events")) == written  # none twice


def test_without_keys_the_page_asks_for_none_on_loopback(browser, redis_url):
    settings = Settings(redis_url=redis_url)  # no API keys: loopback only, as the API
    with gateway_in_thread(settings) as url:
        sid = httpx.post(f"{url}/v1/problems", json=problem()).json()["id"]
        browser.get(f"{url}/ui/")
        browser.execute_script("sessionStorage.clear()")
        browser.get(f"{url}/ui/#/sessions")
        find(browser, f'tr[data-session="{sid}"]')
        assert not browser.find_elements(By.ID, "api-key")
        assert browser.find_element(By.ID, "forget-key").is_displayed() is False
