"""A line of a problem-set file is a valid POST /v1/problems body, sent as it is."""

import httpx
import pytest

from sdpo.problem_set import ProblemSetEntry, write_problem_set
from sdpo.settings import Settings

from .conftest import KEY_A, gateway_in_thread

ENTRY = ProblemSetEntry(
    id="HumanEval/53",
    prompt="Complete the following Python function.\n\n```python\ndef add(x, y):\n```",
    verifier={
        "type": "unit_tests",
        "entry_point": "add",
        "test_code": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
        "prelude": "from typing import List\n",
    },
    reference_solution="def add(x, y):\n    return x + y\n",
    source="a test",
    tags=["humaneval"],
)


@pytest.fixture
def alice(redis_server, redis_url):
    settings = Settings(redis_url=redis_server.url, api_keys=KEY_A)
    with gateway_in_thread(settings) as url:
        headers = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}
        with httpx.Client(base_url=url, headers=headers) as client:
            yield client


def test_a_problem_set_line_posts_as_it_is(alice, tmp_path):
    path = tmp_path / "set.jsonl"
    write_problem_set(path, [ENTRY])
    line = path.read_text().splitlines()[0]
    created = alice.post("/v1/problems", content=line)
    assert created.status_code == 202, created.text
    session = created.json()
    assert session["status"] == "queued" and session["id"] != ENTRY.id
    assert alice.get(f"/v1/problems/{session['id']}").json()["strategy"] == "sdpo"


def test_a_bad_line_is_refused_naming_the_field(alice):
    body = ENTRY.model_dump(exclude_unset=True)
    body["verifier"]["entry_point"] = "1add"
    refused = alice.post("/v1/problems", json=body)
    assert refused.status_code == 422
    assert any("entry_point" in f["field"] for f in refused.json()["fields"])
