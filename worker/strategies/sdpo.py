"""Test-time SDPO: the model, shown the feedback on its own failed attempt, teaches itself.

After a failed batch, each attempt gets a teacher context (the problem plus that attempt's
feedback); the teacher's next-token distributions over the attempt's own tokens are distilled
into the student LoRA, and the next batch is sampled from the updated student.
"""

from __future__ import annotations

from typing import Any

from sdpo.params import SDPOParams

from ..adapter import SessionAdapter
from ..joint_update import UpdateRequest
from ..prompts import fit_teacher_prompt, teacher_prompt
from ..records import Attempt, StepRecord
from ..timing import timed
from ..update import DistillBatch, make_optimizer
from .base import Strategy

MIN_FEEDBACK_TOKENS = 16  # below this, a teacher prompt could not show any useful feedback


class SDPO(Strategy):
    name = "sdpo"
    params: SDPOParams

    def __init__(self, *args: Any, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, seed=seed, **kwargs)
        self.teacher_limit = self._teacher_limit()
        self.adapter = SessionAdapter(self.loaded.model, self.params, seed=seed)
        self.optimizer = make_optimizer(self.adapter, self.params)

    def _adapter(self) -> SessionAdapter:
        return self.adapter

    async def _learn(self, record: StepRecord) -> None:
        phases = record.phase_s
        with timed(phases, "teacher"):
            batch = self._distill_batch(record.attempts)
        request = UpdateRequest(self.adapter, self.optimizer, batch, self.params)
        metrics = await self.updates.update(request, phases=phases)
        record.metrics.update(metrics, feedback_truncated=batch.feedback_truncated)
        await self.compute.run(self.engine.sync_adapter, self.adapter, phases=phases, phase="sync")

    def _teacher_limit(self) -> int:
        """Most tokens a teacher prompt may have: max_reprompt_len, and room in the model's
        context for the longest attempt after it. Refuses a problem that leaves no room."""
        limit = self.params.max_reprompt_len
        if context := self.loaded.context_length:
            limit = min(limit, context - self.params.max_completion_length)
        bare = len(self.loaded.chat_ids(teacher_prompt(self.problem.prompt, "")))
        if bare + MIN_FEEDBACK_TOKENS > limit:
            raise ValueError(
                f"prompt: the teacher's prompt needs {bare} tokens before any feedback; with "
                f"max_reprompt_len {self.params.max_reprompt_len}, max_completion_length "
                f"{self.params.max_completion_length} and the model's context "
                f"{self.loaded.context_length}, that leaves under {MIN_FEEDBACK_TOKENS} for it"
            )
        return limit

    def _distill_batch(self, failed: list[Attempt]) -> DistillBatch:
        contexts = [self._teacher_ids(a) for a in failed]
        return DistillBatch(
            student_contexts=[self.problem_ids] * len(failed),
            teacher_contexts=[ids for ids, _ in contexts],
            attempts=[a.token_ids for a in failed],
            sampler_logprobs=[a.logprobs for a in failed],
            feedback_truncated=sum(cut for _, cut in contexts),
        )

    def _teacher_ids(self, attempt: Attempt) -> tuple[list[int], bool]:
        """The teacher's prompt for one failed attempt, within `teacher_limit` tokens; the
        attempt's own tokens go after it (the scorer appends them)."""
        if self.problem.reference_prompt is not None:  # the benchmark's control only
            return self.loaded.chat_ids(self.problem.reference_prompt), False
        return fit_teacher_prompt(
            self.loaded.chat_ids,
            self.loaded.tokenizer,
            self.problem.prompt,
            attempt.judgement.feedback,
            max_tokens=self.teacher_limit,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "adapter": self.adapter.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.adapter.load_state_dict(state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])

    def close(self) -> None:
        self.engine.release_adapter(self.adapter)
        self.adapter.close()
