"""The gateway, the client and the CLI import without torch or the worker."""

import subprocess
import sys

from .conftest import REPO

PROBE = """
import sys
import sdpo_serve.cli, sdpo.client, sdpo_serve.embedded, sdpo.schemas, sdpo.store
from sdpo.settings import Settings
from service.app import create_app
create_app(Settings(redis_url="redis://unused")).openapi()
heavy = {"torch", "transformers", "peft", "worker", "safetensors"}
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""
CONTRACT_PROBE = """
import sys
import sdpo.client, sdpo.params, sdpo.problem_set, sdpo.schemas, sdpo.settings, sdpo.store
outside = {"fastapi", "torch", "service", "worker", "sdpo_serve"}
print(sorted({m.split(".")[0] for m in sys.modules} & outside))
"""


def test_the_gateway_imports_neither_torch_nor_the_worker():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_contract_imports_nothing_of_the_gateway_workers_or_entry_points():
    result = subprocess.run(
        [sys.executable, "-c", CONTRACT_PROBE], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
