"""Session-wide fixtures: one real Redis server (the embedded one) for every test that needs
a store, flushed before each test that uses it, and one real sandbox."""

import shutil
from pathlib import Path

import pytest
import redis

from sandbox import Sandbox, SandboxSettings
from sdpo_serve.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), fsync="everysec") as server:
        yield server


@pytest.fixture
def redis_url(redis_server) -> str:
    """A real, empty Redis."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """The real bubblewrap sandbox (make test installs bwrap when it is missing)."""
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is required for the sandbox tests (make test installs it)")
    return Sandbox(SandboxSettings(max_parallel=4))


REPO = Path(__file__).resolve().parents[1]
# The converted built-in GGUF models persist between runs (git-ignored), like `sdpo serve`'s.
MODEL_CACHE = REPO / ".sdpo" / "models"
SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_source():
    """The real SmolLM2-135M-Instruct from its PyPI wheel, converted once (about 30 s)."""
    from worker.catalogue import catalogue, resolve_model

    entry = catalogue()[SMOLLM2]
    if entry.source() is None:
        pytest.skip(f"the real model is not installed: {entry.install} (make test does it)")
    return resolve_model(SMOLLM2, MODEL_CACHE)
