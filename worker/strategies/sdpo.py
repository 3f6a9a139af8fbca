"""Test-time SDPO: the model, shown the feedback on its own failed attempt, teaches itself.

After a failed batch, each attempt gets a teacher context (the problem plus that attempt's
feedback); the teacher's next-token distributions over the attempt's own tokens are distilled
into the student LoRA, and the next batch is sampled from the updated student.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sdpo.params import SDPOParams

from ..adapter import SessionAdapter
from ..prompts import teacher_prompt
from ..records import Attempt, StepRecord
from ..timing import timed
from ..update import DistillBatch, distill, make_optimizer, teacher_logits
from .base import Strategy


class SDPO(Strategy):
    name = "sdpo"
    params: SDPOParams

    def __init__(self, *args: Any, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, seed=seed, **kwargs)
        if self.params.teacher_context == "reference" and not self.problem.reference_prompt:
            raise ValueError("teacher_context 'reference' needs a problem with a reference_prompt")
        self.adapter = SessionAdapter(self.loaded.model, self.params, seed=seed)
        self.optimizer = make_optimizer(self.adapter, self.params)

    def _adapter(self) -> SessionAdapter:
        return self.adapter

    async def _learn(self, record: StepRecord) -> None:
        with timed(record.phase_s, "teacher"):
            batch = self._distill_batch(record.attempts)
            teacher = await asyncio.to_thread(
                teacher_logits, self.adapter, batch, self.params.temperature
            )
        with timed(record.phase_s, "train"):
            metrics = await asyncio.to_thread(
                distill, self.adapter, self.optimizer, batch, teacher, self.params
            )
            record.metrics.update(metrics)
        with timed(record.phase_s, "sync"):
            self.engine.sync_adapter(self.adapter)

    def _distill_batch(self, failed: list[Attempt]) -> DistillBatch:
        return DistillBatch(
            student_contexts=[self.problem_ids] * len(failed),
            teacher_contexts=[self.loaded.chat_ids(self._teacher_text(a)) for a in failed],
            attempts=[a.token_ids for a in failed],
            sampler_logprobs=[a.logprobs for a in failed],
        )

    def _teacher_text(self, attempt: Attempt) -> str:
        if self.params.teacher_context == "reference":
            return self.problem.reference_prompt
        return teacher_prompt(self.problem.prompt, attempt.judgement.feedback)

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
