"""`sdpo serve` with the real SmolLM2-135M-Instruct: a real problem through the API, from POST
to a terminal state, with the exact attempt count and the model profile's params in effect."""

import httpx
import pytest

from sdpo.client import SdpoClient
from tests.conftest import MODEL_CACHE, SMOLLM2

from .conftest import WORKER_ENV, Serve, child_env

pytestmark = pytest.mark.slow

DOUBLE = {
    "prompt": "Write a Python function double(x) that returns twice its argument.",
    "verifier": {
        "type": "function_tests",
        "entry_point": "double",
        "tests": [{"args": [2], "expected": 4}, {"args": [-3], "expected": -6}],
    },
    "strategy": "sdpo",
    "budget": {"max_attempts": 4},
    "params": {"num_generations": 4, "max_completion_length": 48},
    "seed": 0,
}


def test_serve_runs_a_real_problem_on_smollm2(tmp_path, smollm2_source, started):
    env = child_env("", SDPO_MODEL=SMOLLM2, SDPO_MODEL_CACHE_DIR=str(MODEL_CACHE), **WORKER_ENV)
    env.pop("SDPO_REDIS_URL")
    serve = Serve(tmp_path / "data", env, tmp_path / "serve.log")
    started.append(serve.process)
    with SdpoClient(serve.url) as client:
        created = client.create_problem(DOUBLE)
        assert created.params == DOUBLE["params"]  # as asked, until a worker starts it
        final = client.wait(created.id)
        attempts = httpx.get(f"{serve.url}/v1/problems/{created.id}/attempts").json()
    assert final.status in ("solved", "exhausted"), final.error
    assert final.attempts_used == 4 and len(final.steps) == 1 and attempts["total"] == 4
    assert final.params["learning_rate"] == 1e-4  # the smollm2 profile's, filled in
    assert final.params["max_completion_length"] == 48 and final.params["num_iterations"] == 1
    if final.status == "solved":
        assert "def double" in final.solution.code
    else:
        assert final.steps[0].metrics["loss"] >= 0
    assert all(a["tokens"] <= 48 for a in attempts["items"])
