"""Session-wide fixtures: one real Redis server (the embedded one) for every test that needs
a store, flushed before each test that uses it, and one real sandbox."""

import shutil

import pytest
import redis

from sandbox import Sandbox, SandboxSettings
from sdpo.embedded import EmbeddedRedis


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
