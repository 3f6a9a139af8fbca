"""The strategy interface: one step = attempt → execute → (feedback → update).

Every strategy runs through the same `step`; they differ only in the prompt they sample from,
the adapter they sample with, and what they learn from a failed batch (`_learn`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from sandbox import Sandbox, Spec
from sdpo.params import SamplingParams

from ..adapter import SessionAdapter
from ..batching import GenerationBatcher, UpdateBatcher
from ..compute import ComputeTurns
from ..engine import BatchRequest, Engine
from ..generation import Sample, SamplingConfig
from ..judging import Judge
from ..records import Attempt, StepRecord
from ..timing import timed

StopCheck = Callable[[], Awaitable[bool]]


class StepInterrupted(Exception):
    """A stop was requested after sampling and before judging: the batch is dropped, uncounted
    by the caller (a resumed session samples it again from its checkpointed RNG state)."""


class VerifierFailed(RuntimeError):
    """The verifier itself is broken (e.g. the checker raised): no attempt can be judged."""


@dataclass(frozen=True)
class Problem:
    prompt: str
    verifier: Spec
    # Diagnostic control only, never set for the API's problems: a user message that gives the
    # answer away (the problem plus a correct solution, `prompts.solution_prompt`). When set,
    # SDPO's teacher sees it instead of the feedback (the benchmark's reference-teacher control).
    reference_prompt: str | None = None


@dataclass
class Runtime:
    """What a worker shares between sessions: the engine (and its model), the sandbox, the
    operator's parameter defaults (SDPO_PARAMS), which override the model profile's, the
    sessions' turns on the model (`compute`: all model work goes through it), the scheduler
    that samples every ready session's batch in one engine call (`generations`) and the one
    that updates every SDPO session ready to learn in shared passes (`updates`)."""

    engine: Engine
    sandbox: Sandbox
    param_overrides: dict[str, Any] = field(default_factory=dict)
    compute: ComputeTurns = field(default_factory=ComputeTurns)
    batch_generation: bool = True  # SDPO_WORKER_BATCH_GENERATION
    batch_update: bool = True  # SDPO_WORKER_BATCH_UPDATE
    generations: GenerationBatcher = field(init=False)
    updates: UpdateBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.generations = GenerationBatcher(self.engine, self.compute, self.batch_generation)
        self.updates = UpdateBatcher(self.compute, self.batch_update)


class Strategy:
    """Base of all strategies; on its own it is independent sampling (see BestOfK)."""

    name: ClassVar[str]

    def __init__(
        self, problem: Problem, params: SamplingParams, runtime: Runtime, *, seed: int
    ) -> None:
        self.problem = problem
        self.params = params
        self.engine = runtime.engine
        self.compute = runtime.compute
        self.generations = runtime.generations
        self.updates = runtime.updates
        self.loaded = runtime.engine.loaded
        self.judge = Judge(runtime.sandbox, problem.verifier)
        self.generator = torch.Generator().manual_seed(seed)
        self.step_index = 0
        self.attempts_used = 0
        self.problem_ids = self.loaded.chat_ids(problem.prompt)
        context = self.loaded.context_length
        if context and len(self.problem_ids) + params.max_completion_length > context:
            raise ValueError(
                f"prompt: {len(self.problem_ids)} tokens plus max_completion_length "
                f"{params.max_completion_length} exceed the model's context of {context} tokens"
            )

    async def step(self, max_attempts: int, should_stop: StopCheck | None = None) -> StepRecord:
        """Sample a batch, judge it, and learn from it unless an attempt passed.

        `should_stop` is asked between phases: before judging (raises StepInterrupted) and
        before the update (the judged batch is kept, the update skipped)."""
        record = StepRecord(step=self.step_index, attempts=[])
        n = min(self.params.num_generations, max_attempts)
        samples = await self.generations.generate(self._request(n), phases=record.phase_s)
        record.attempts = self._attempts(samples)
        if should_stop is not None and await should_stop():
            self.attempts_used -= n  # never judged, so never counted
            raise StepInterrupted
        with timed(record.phase_s, "judge"):
            await self._execute(record.attempts)
        if record.first_success is None and not (should_stop is not None and await should_stop()):
            await self._learn(record)
        self.step_index += 1
        return record

    def _request(self, n: int) -> BatchRequest:
        config = SamplingConfig(
            stop_token_ids=self.loaded.stop_token_ids,
            temperature=self.params.temperature,
            top_p=self.params.top_p,
            max_new_tokens=self.params.max_completion_length,
        )
        return BatchRequest(self._prompt_ids(), n, config, self.generator, self._adapter())

    def _attempts(self, samples: list[Sample]) -> list[Attempt]:
        first = self.attempts_used + 1
        self.attempts_used += len(samples)
        return [
            Attempt(
                index=first + i,
                step=self.step_index,
                text=self.loaded.decode(s.token_ids),
                token_ids=s.token_ids,
                logprobs=s.logprobs,
            )
            for i, s in enumerate(samples)
        ]

    async def _execute(self, attempts: list[Attempt]) -> None:
        judgements = await self.judge.judge([a.text for a in attempts])
        for attempt, judgement in zip(attempts, judgements, strict=True):
            if judgement.verdict == "invalid_spec":
                raise VerifierFailed(judgement.feedback)
            attempt.judgement = judgement

    def _prompt_ids(self) -> list[int]:
        return self.problem_ids

    def _adapter(self) -> SessionAdapter | None:
        return None

    async def _learn(self, record: StepRecord) -> None:
        """What a failed batch teaches; nothing for independent sampling."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this step left off."""
        return {
            "step_index": self.step_index,
            "attempts_used": self.attempts_used,
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_index = state["step_index"]
        self.attempts_used = state["attempts_used"]
        self.generator.set_state(state["rng"])

    def close(self) -> None:
        """Release per-session resources (the SDPO adapter). It touches the model: in a
        worker with other sessions, call it through `compute.run`."""
