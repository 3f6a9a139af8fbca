"""Session-wide fixtures: one real Redis server (the embedded one) for every test that needs
a store, flushed before each test that uses it."""

import pytest
import redis

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
