"""Multi-turn retry: one growing conversation with all past feedback in the prompt.

Each step samples its batch from the problem plus the feedback gathered so far (feedback only,
not past attempts, like the official baseline), then adds the feedback of the batch's first
failed attempt. When the prompt would exceed `max_prompt_length` tokens, the oldest feedback
is dropped first.
"""

from __future__ import annotations

from typing import Any

from sdpo.params import MultiTurnParams

from ..prompts import multi_turn_prompt
from ..records import StepRecord
from .base import Strategy


class MultiTurn(Strategy):
    name = "multi_turn"
    params: MultiTurnParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feedbacks: list[str] = []

    def _prompt_ids(self) -> list[int]:
        limit = self.params.max_prompt_length
        if context := self.loaded.context_length:  # the answer must fit after the prompt
            limit = min(limit, context - self.params.max_completion_length)
        # newest first, so that no prompt far over the limit is ever tokenized (the tokenizer
        # warns about "indexing errors" past its maximum length)
        kept: list[str] = []
        ids = self.loaded.chat_ids(multi_turn_prompt(self.problem.prompt, kept))
        for feedback in reversed(self.feedbacks):
            longer = self.loaded.chat_ids(multi_turn_prompt(self.problem.prompt, [feedback, *kept]))
            if len(longer) > limit:
                break
            kept.insert(0, feedback)
            ids = longer
        return ids

    async def _learn(self, record: StepRecord) -> None:
        judgement = record.attempts[0].judgement
        if judgement is not None:
            self.feedbacks.append(judgement.feedback)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "feedbacks": list(self.feedbacks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.feedbacks = list(state["feedbacks"])
