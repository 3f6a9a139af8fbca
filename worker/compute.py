"""Turns on the model: the sessions of one worker compute one at a time, in arrival order.

A worker runs several sessions concurrently, and they share one model: the generation twin,
the base model and the adapter host (worker/adapter.py) whose active adapter is process-wide
state. So every piece of work that touches the model, from sampling and scoring to training,
syncing an adapter and adding or removing one, runs through `ComputeTurns.run`:

* in a thread, so that the event loop keeps heartbeating, committing and judging meanwhile
  (session A's batch is judged in the sandbox while session B generates; generation itself
  goes through worker/batching.py, which samples every waiting session in one turn);
* under a FIFO asyncio lock, so that no session waits more than one turn behind another;
* and under a thread lock, so that a turn whose awaiting coroutine was cancelled still ends
  before the next one starts (the thread cannot be stopped, only waited for).

Time spent waiting for a turn is recorded as the step's `wait` phase, apart from the phase
that then runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeVar

from .timing import timed

T = TypeVar("T")

MIN_WAIT_S = 0.001  # shorter waits are not recorded: a solo session's steps keep their phases


class ComputeTurns:
    """Exclusive, first-come-first-served use of one worker's model."""

    def __init__(self) -> None:
        self._exclusive = threading.Lock()
        self.granted_at = 0.0
        # asyncio locks belong to one event loop; the benchmark runs one loop per run
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def busy(self) -> bool:
        """Some turn holds the model now (call from the event loop)."""
        return self._lock().locked()

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop not in self._turns:
            self._turns[loop] = asyncio.Lock()
        return self._turns[loop]

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        phases: dict[str, float] | None = None,
        phase: str | None = None,
    ) -> T:
        """fn(*args) in a thread, in this caller's turn. With `phases`, the seconds waited go
        to phases["wait"] and the seconds run to phases[phase]."""
        asked = time.perf_counter()
        async with self._lock():
            self.granted_at = time.perf_counter()  # when the current turn began
            waited = self.granted_at - asked
            if phases is not None and waited >= MIN_WAIT_S:
                phases["wait"] = phases.get("wait", 0.0) + waited
            with timed(phases, phase) if phases is not None and phase else nullcontext():
                return await asyncio.to_thread(self._exclusive_call, fn, *args)

    def _exclusive_call(self, fn: Callable[..., T], *args: Any) -> T:
        with self._exclusive:
            return fn(*args)
