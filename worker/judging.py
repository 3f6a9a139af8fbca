"""The judging phase: every attempt of a step goes to the sandbox, concurrently.

Identical answers are judged once per session: a small model repeats itself often, and the
verdict of a deterministic program on fixed tests does not change.
"""

from __future__ import annotations

from sandbox import Judgement, Sandbox, Spec


class Judge:
    """Judges one problem's attempts; keeps a per-session cache keyed by the answer text."""

    def __init__(self, sandbox: Sandbox, spec: Spec) -> None:
        self.sandbox = sandbox
        self.spec = spec
        self._cache: dict[str, Judgement] = {}

    async def judge(self, answers: list[str]) -> list[Judgement]:
        new = [a for a in dict.fromkeys(answers) if a not in self._cache]
        for answer, verdict in zip(new, await self.sandbox.judge_many(self.spec, new), strict=True):
            self._cache[answer] = verdict
        return [self._cache[a].model_copy(deep=True) for a in answers]
