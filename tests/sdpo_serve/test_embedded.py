"""The embedded Redis: a real server whose AOF brings every acknowledged write back."""

import os
import signal
import sys
import threading
import time

import redis

from sdpo_serve.embedded import URL_FILE, EmbeddedRedis, WorkerPool, discover_url


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


def _pool(code: str, size: int = 1, **backoff) -> WorkerPool:
    return WorkerPool([sys.executable, "-c", code], dict(os.environ), size, **backoff)


def test_a_worker_that_dies_is_restarted_with_a_growing_backoff():
    pool = _pool("import sys; sys.exit(3)", backoff_s=0.2, max_backoff_s=0.8, stable_s=60)
    stopping = threading.Event()
    pool.start()
    supervisor = threading.Thread(target=pool.supervise, args=(stopping, 0.02))
    supervisor.start()
    time.sleep(4)
    stopping.set()
    supervisor.join(5)
    pool.stop(grace_s=5)
    starts = [t for slot, t in pool.started if slot == 0]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) >= 4, gaps
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and all(g >= 0.8 for g in gaps[2:])
    assert all(g < 0.8 + 0.5 for g in gaps), gaps  # capped (plus a Python start-up)


def test_a_killed_worker_comes_back_and_stop_ends_every_worker():
    pool = _pool("import time; time.sleep(60)", size=2, backoff_s=0.1)
    stopping = threading.Event()
    pool.start()
    supervisor = threading.Thread(target=pool.supervise, args=(stopping, 0.02))
    supervisor.start()
    victim = pool.processes[1]
    victim.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pool.processes[1] is victim and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.processes[1] is not victim and pool.processes[1].poll() is None
    stopping.set()
    supervisor.join(5)
    pool.stop(grace_s=5)
    assert all(p.poll() is not None for p in pool.processes)
    assert pool.processes[0].returncode == -signal.SIGTERM
