"""A benchmark pool dies with its parent: a killed `sdpo bench` leaves nothing computing on."""

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PARENT = """
import os
from discovery import pool
workers = pool.open_pool(1, "hf", "toy", "toy")
print(workers.submit(os.getpid).result(), flush=True)
os._exit(0)  # as a SIGKILL would: no executor shutdown runs
"""


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_pool_processes_die_with_their_parent():
    parent = subprocess.run(
        [sys.executable, "-c", PARENT], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert parent.returncode == 0, parent.stderr[-2000:]
    child = int(parent.stdout.split()[-1])
    deadline = time.monotonic() + 15
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)
