"""The worker's generation scheduler: every session ready to sample goes into one engine call.

Sessions ask for a batch of attempts with `GenerationBatcher.generate`. Requests queue up while
the model is busy (another session's generation, teacher scoring or update); when the batcher's
turn on the model comes (`ComputeTurns`, first come first served), one tick takes every request
then queued and hands them to the engine's `generate_batch` together: on the hf engine one
forward pass per token for all their rows, each row with its own session's adapter; on the vllm
engine one `generate` with a LoRARequest per request. A request waits at most for the tick
that is running when it arrives, so no session falls more than one tick behind another.

A lone request is exactly the engine's single-session `generate`, so a worker that runs one
session at a time samples what it always has; with SDPO_WORKER_BATCH_GENERATION off, a tick
samples its requests one by one, bit for bit as lone sessions. Co-batched rows differ from
their solo run only in float rounding (padding, batch shape). If a batch fails as a whole (say,
out of memory), every request is retried alone from its generator's state before the batch, so
one session's failure stays its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from .compute import MIN_WAIT_S, ComputeTurns
from .engine import BatchRequest, Engine
from .generation import Sample


@dataclass
class _Queued:
    request: BatchRequest
    future: asyncio.Future[list[Sample]]
    asked: float  # perf_counter at submission
    contended: bool  # the model was busy then: the time until its tick's turn is a wait
    outcome: list[Sample] | BaseException | None = None
    ran: tuple[float, float] = (0.0, 0.0)  # its tick's turn: granted, ended


@dataclass
class TickLog:
    """What the batcher did, for the benchmark and the tests (counters: a worker runs for
    weeks): ticks, the requests and rows they sampled, the most requests in one tick, and the
    seconds the model spent generating (each session's own `generate` phase counts the whole
    tick it shared)."""

    ticks: int = 0
    requests: int = 0
    rows: int = 0
    most_requests: int = 0
    seconds: float = 0.0

    def add(self, requests: int, rows: int, seconds: float) -> None:
        self.ticks += 1
        self.requests += requests
        self.rows += rows
        self.most_requests = max(self.most_requests, requests)
        self.seconds += seconds


class GenerationBatcher:
    """Batches the generation requests of one worker's sessions into engine calls."""

    def __init__(self, engine: Engine, compute: ComputeTurns, together: bool = True) -> None:
        self.engine = engine
        self.compute = compute
        self.together = together  # False: each request alone, bit for bit as a lone session
        self.log = TickLog()
        self._queue: deque[_Queued] = deque()
        self._runner: asyncio.Task[None] | None = None

    async def generate(
        self, request: BatchRequest, *, phases: dict[str, float] | None = None
    ) -> list[Sample]:
        """The request's samples. With `phases`, the seconds before its tick started go to
        phases["wait"] and the tick's seconds to phases["generate"]."""
        loop = asyncio.get_running_loop()
        queued = _Queued(request, loop.create_future(), time.perf_counter(), self.compute.busy())
        self._queue.append(queued)
        if self._runner is None or self._runner.done() or self._runner.get_loop() is not loop:
            self._runner = loop.create_task(self._serve())
        samples = await queued.future
        if phases is not None:
            granted, ended = queued.ran
            if not queued.contended:  # handing the request to its tick is generation's time
                granted = queued.asked
            if granted - queued.asked >= MIN_WAIT_S:
                phases["wait"] = phases.get("wait", 0.0) + granted - queued.asked
            phases["generate"] = phases.get("generate", 0.0) + ended - granted
        return samples

    async def _serve(self) -> None:
        while self._queue:
            ticked = await self.compute.run(self._tick)
            for queued in ticked:
                if queued.future.done():  # its session was cancelled meanwhile
                    continue
                if isinstance(queued.outcome, BaseException):
                    queued.future.set_exception(queued.outcome)
                else:
                    queued.future.set_result(queued.outcome)

    def _tick(self) -> list[_Queued]:
        """In the model's turn (a worker thread): every request queued now, in one call."""
        ticked: list[_Queued] = []
        while self._queue:  # deque.popleft is atomic: the event loop may append meanwhile
            ticked.append(self._queue.popleft())
        # a cancelled session's request (or one of an event loop that ended) is not sampled
        ticked = [q for q in ticked if not q.future.done() and not q.future.get_loop().is_closed()]
        if not ticked:
            return ticked
        granted = self.compute.granted_at  # this tick's turn on the model began
        try:
            outcomes = self._outcomes(ticked)
        except Exception as error:  # noqa: BLE001 (a bug of ours: every request hears of it)
            outcomes = [error] * len(ticked)
        ended = time.perf_counter()
        self.log.add(len(ticked), sum(q.request.n for q in ticked), ended - granted)
        for queued, outcome in zip(ticked, outcomes, strict=True):
            queued.outcome, queued.ran = outcome, (granted, ended)
        return ticked

    def _outcomes(self, ticked: list[_Queued]) -> list[list[Sample] | BaseException]:
        requests = [q.request for q in ticked]
        states = [r.generator.get_state() for r in requests]
        if self.together or len(requests) == 1:
            try:
                return list(self.engine.generate_batch(requests))
            except Exception as error:  # noqa: BLE001 (reported to the requests, never lost)
                if len(requests) == 1:
                    return [error]
        outcomes: list[list[Sample] | BaseException] = []
        for request, state in zip(requests, states, strict=True):
            request.generator.set_state(state)
            try:
                outcomes.append(self.engine.generate_batch([request])[0])
            except Exception as error:  # noqa: BLE001 (this request's own failure, reported to it)
                outcomes.append(error)
        return outcomes
