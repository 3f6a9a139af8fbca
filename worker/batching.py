"""The worker's schedulers: every session ready to sample goes into one engine call, and every
SDPO session ready to learn into one update.

Sessions ask for a batch of attempts (`GenerationBatcher.generate`) or for an update
(`UpdateBatcher.update`). Requests queue up while the model is busy (another session's
generation, update, or adapter bookkeeping); when the batcher's turn on the model comes
(`ComputeTurns`, first come first served), one tick takes every request then queued and
computes them together: generation on the hf engine is one forward pass per token for all
their rows, each row with its own session's adapter, and on the vllm engine one `generate`
with a LoRARequest per request; an update is one teacher pass and one forward and backward
per row group for all sessions (worker/joint_update.py). A request waits at most for the tick
that is running when it arrives, so no session falls more than one tick behind another.

A lone request computes exactly as a worker with one session always has. With
SDPO_WORKER_BATCH_GENERATION (or SDPO_WORKER_BATCH_UPDATE) off, a tick computes its requests
one by one, bit for bit as lone sessions. Co-batched rows differ from their solo run only in
float rounding (padding, batch shape). If a tick fails as a whole (say, out of memory), every
request is retried alone from where it started, so one session's failure stays its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from .compute import MIN_WAIT_S, ComputeTurns
from .engine import BatchRequest, Engine
from .generation import Sample
from .joint_update import (
    JointUpdateFailed,
    UpdateRequest,
    UpdateResult,
    can_join,
    joint_update,
    solo_update,
)

Request = TypeVar("Request")
Outcome = TypeVar("Outcome")


@dataclass
class _Queued(Generic[Request, Outcome]):
    request: Request
    future: asyncio.Future[Outcome]
    asked: float  # perf_counter at submission
    contended: bool  # the model was busy then: the time until its tick's turn is a wait
    outcome: Outcome | BaseException | None = None
    ran: tuple[float, float] = (0.0, 0.0)  # its tick's turn: granted, ended

    def record(self, phases: dict[str, float] | None, phase: str | None) -> float:
        """Adds the wait before its tick to phases["wait"] and, with `phase`, the tick's
        seconds to phases[phase]; returns the tick's seconds."""
        granted, ended = self.ran
        if not self.contended:  # handing the request to its tick is the tick's own time
            granted = self.asked
        if phases is not None:
            if granted - self.asked >= MIN_WAIT_S:
                phases["wait"] = phases.get("wait", 0.0) + granted - self.asked
            if phase is not None:
                phases[phase] = phases.get(phase, 0.0) + ended - granted
        return ended - granted


@dataclass
class TickLog:
    """What a batcher did, for the benchmark and the tests (counters: a worker runs for
    weeks): ticks, the requests and rows they computed, the most requests in one tick, and
    the seconds the model spent on them (each session's own phases count the whole tick it
    shared)."""

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


class _TickBatcher(Generic[Request, Outcome]):
    """Queues requests and computes every queued one in the batcher's next turn."""

    def __init__(self, compute: ComputeTurns, together: bool = True) -> None:
        self.compute = compute
        self.together = together  # False: each request alone, bit for bit as a lone session
        self.log = TickLog()
        self._queue: deque[_Queued[Request, Outcome]] = deque()
        self._runner: asyncio.Task[None] | None = None

    async def _submit(self, request: Request) -> _Queued[Request, Outcome]:
        """Queues the request; returns it once its tick has computed it (raising its error)."""
        loop = asyncio.get_running_loop()
        queued = _Queued(request, loop.create_future(), time.perf_counter(), self.compute.busy())
        self._queue.append(queued)
        if self._runner is None or self._runner.done() or self._runner.get_loop() is not loop:
            self._runner = loop.create_task(self._serve())
        await queued.future
        return queued

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

    def _tick(self) -> list[_Queued[Request, Outcome]]:
        """In the model's turn (a worker thread): every request queued now, in one call."""
        ticked: list[_Queued[Request, Outcome]] = []
        while self._queue:  # deque.popleft is atomic: the event loop may append meanwhile
            ticked.append(self._queue.popleft())
        # a cancelled session's request (or one of an event loop that ended) is not computed
        ticked = [q for q in ticked if not q.future.done() and not q.future.get_loop().is_closed()]
        if not ticked:
            return ticked
        granted = self.compute.granted_at  # this tick's turn on the model began
        requests = [q.request for q in ticked]
        try:
            outcomes = self._outcomes(requests)
        except Exception as error:  # noqa: BLE001 (a bug of ours: every request hears of it)
            outcomes = [error] * len(ticked)
        ended = time.perf_counter()
        self.log.add(len(ticked), sum(self._rows(r) for r in requests), ended - granted)
        for queued, outcome in zip(ticked, outcomes, strict=True):
            queued.outcome, queued.ran = outcome, (granted, ended)
        return ticked

    def _outcomes(self, requests: list[Request]) -> list[Outcome | BaseException]:
        raise NotImplementedError

    def _rows(self, request: Request) -> int:
        raise NotImplementedError


class GenerationBatcher(_TickBatcher[BatchRequest, list[Sample]]):
    """Batches the generation requests of one worker's sessions into engine calls."""

    def __init__(self, engine: Engine, compute: ComputeTurns, together: bool = True) -> None:
        super().__init__(compute, together)
        self.engine = engine

    async def generate(
        self, request: BatchRequest, *, phases: dict[str, float] | None = None
    ) -> list[Sample]:
        """The request's samples. With `phases`, the seconds before its tick started go to
        phases["wait"] and the tick's seconds to phases["generate"]."""
        queued = await self._submit(request)
        queued.record(phases, "generate")
        return queued.future.result()

    def _rows(self, request: BatchRequest) -> int:
        return request.n

    def _outcomes(self, requests: list[BatchRequest]) -> list[list[Sample] | BaseException]:
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


class UpdateBatcher(_TickBatcher[UpdateRequest, UpdateResult]):
    """Batches the SDPO updates of one worker's sessions into joint updates."""

    async def update(
        self, request: UpdateRequest, *, phases: dict[str, float] | None = None
    ) -> dict[str, float]:
        """The update's metrics. With `phases`, the seconds before its tick started go to
        phases["wait"], and its tick's scoring and training to phases["teacher"] and
        phases["train"]."""
        queued = await self._submit(request)
        queued.record(phases, None)
        result = queued.future.result()
        if phases is not None:
            for phase, seconds in (("teacher", result.teacher_s), ("train", result.train_s)):
                phases[phase] = phases.get(phase, 0.0) + seconds
        return result.metrics

    def _rows(self, request: UpdateRequest) -> int:
        return len(request.batch.attempts)

    def _outcomes(self, requests: list[UpdateRequest]) -> list[UpdateResult | BaseException]:
        retry = set(range(len(requests)))
        outcomes: list[UpdateResult | BaseException] = [RuntimeError("not updated")] * len(requests)
        if self.together and len(requests) > 1 and can_join(requests):
            try:
                return list(joint_update(requests))
            except JointUpdateFailed as failed:  # sessions that stepped cannot start again
                for i in failed.stepped:
                    outcomes[i] = failed.error
                retry -= failed.stepped
        for i in sorted(retry):
            try:
                outcomes[i] = solo_update(requests[i])
            except Exception as error:  # noqa: BLE001 (this request's own failure, reported to it)
                outcomes[i] = error
        return outcomes
