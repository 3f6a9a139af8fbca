"""Prompt texts: the student's prompt, the teacher's reprompt and the multi-turn context.

The templates are the official SDPO ones (lasgroup/SDPO). The attempt's own tokens are appended
after the teacher context by the scorer; they are never part of the teacher's prompt text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

FEEDBACK_TEMPLATE = (
    "\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback_raw}\n\n"
)
REPROMPT_TEMPLATE = "{prompt}{feedback}\n\nCorrectly solve the original question."
# The official template also shows a successful earlier attempt when one exists; here it serves
# the reference-teacher control, which shows a correct solution instead of the feedback.
SOLUTION_TEMPLATE = "\nCorrect solution:\n\n{successful_previous_attempt}\n\n"


def teacher_prompt(prompt: str, feedback_raw: str) -> str:
    """The self-teacher's user message: the problem plus feedback on one failed attempt."""
    feedback = FEEDBACK_TEMPLATE.format(feedback_raw=feedback_raw)
    return REPROMPT_TEMPLATE.format(prompt=prompt, feedback=feedback)


def solution_prompt(prompt: str, solution: str) -> str:
    """The reference teacher's user message: the problem plus a correct solution."""
    shown = SOLUTION_TEMPLATE.format(successful_previous_attempt=solution)
    return REPROMPT_TEMPLATE.format(prompt=prompt, feedback=shown)


def multi_turn_prompt(prompt: str, feedbacks: Sequence[str]) -> str:
    """The multi-turn baseline's user message: the problem plus all past feedback, oldest
    first (like the official baseline, past attempts themselves are not shown)."""
    if not feedbacks:
        return prompt
    feedback = "".join(FEEDBACK_TEMPLATE.format(feedback_raw=f) for f in feedbacks)
    return REPROMPT_TEMPLATE.format(prompt=prompt, feedback=feedback)


TRUNCATION_MARK = "\n[feedback truncated]"


class TextTokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...


def fit_teacher_prompt(
    chat_ids: Callable[[str], list[int]],
    tokenizer: TextTokenizer,
    prompt: str,
    feedback_raw: str,
    *,
    max_tokens: int,
) -> tuple[list[int], bool]:
    """The teacher's prompt ids within `max_tokens`: the feedback's tail is cut to fit.

    `chat_ids` turns a user message into chat-prompt ids. Returns (ids, truncated). The head of
    the feedback stays, since it holds the first failure. Raises ValueError when not even the
    problem with the cut mark fits."""
    ids = chat_ids(teacher_prompt(prompt, feedback_raw))
    if len(ids) <= max_tokens:
        return ids, False
    feedback_ids = tokenizer.encode(feedback_raw, add_special_tokens=False)
    keep = len(feedback_ids) - (len(ids) - max_tokens)
    while keep > 0:  # tokens can merge across the cut: shorten until the whole prompt fits
        cut = tokenizer.decode(feedback_ids[:keep]) + TRUNCATION_MARK
        ids = chat_ids(teacher_prompt(prompt, cut))
        if len(ids) <= max_tokens:
            return ids, True
        keep -= len(ids) - max_tokens
    ids = chat_ids(teacher_prompt(prompt, TRUNCATION_MARK.strip()))
    if len(ids) > max_tokens:
        raise ValueError(
            f"prompt: the teacher's prompt needs {len(ids)} tokens without any feedback, "
            f"over its limit of {max_tokens}"
        )
    return ids, True
