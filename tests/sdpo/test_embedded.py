"""The embedded Redis: a real server whose AOF brings every acknowledged write back."""

import redis

from sdpo.embedded import URL_FILE, EmbeddedRedis, discover_url


def test_data_survives_a_restart_and_a_crash(tmp_path):
    server = EmbeddedRedis(tmp_path).start()
    assert discover_url(tmp_path) == server.url and (tmp_path / URL_FILE).is_file()
    with redis.Redis.from_url(server.url) as client:
        client.set("kept", "1")
    server.stop()
    assert discover_url(tmp_path) is None
    server = EmbeddedRedis(tmp_path, port=server.port).start()
    with redis.Redis.from_url(server.url) as client:
        assert client.get("kept") == b"1"
        client.set("acknowledged", "2")
    server.kill()  # appendfsync always: an acknowledged write is on disk before the reply
    server = EmbeddedRedis(tmp_path).start()
    with redis.Redis.from_url(server.url) as client:
        assert (client.get("kept"), client.get("acknowledged")) == (b"1", b"2")
    server.stop()
    assert server.process.returncode == 0


def test_a_second_server_on_the_same_data_is_refused(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        try:
            EmbeddedRedis(tmp_path).start()
        except RuntimeError as error:
            assert server.url in str(error)
        else:
            raise AssertionError("two servers on one AOF")
