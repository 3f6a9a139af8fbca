"""Getting the program out of a model's raw answer."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)

NO_CODE_FEEDBACK = "No code block found. Put your code inside a ```python``` block."


def extract_code(answer: str) -> tuple[str, bool]:
    """The last fenced ```python block (an unclosed last fence counts), else the whole text.

    Returns (code, fenced): `fenced` is False when no fence was found, so the caller can say
    "no code block" instead of reporting prose as a syntax error.
    """
    blocks = _FENCE.findall(answer)
    if blocks:
        return blocks[-1].strip("\n"), True
    return answer.strip("\n"), False
