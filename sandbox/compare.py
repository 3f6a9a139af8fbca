"""Output comparison as competitive-programming judges do it."""

from __future__ import annotations

import math
from typing import Any


def _numbers_close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))


def _as_float(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def tokens_match(got: str, expected: str, tol: float) -> bool:
    """Whitespace-tolerant, token by token; numeric tokens may differ within `tol`
    (absolute below 1, relative above), so "3" matches "3.0000001" but not "4"."""
    got_tokens, want_tokens = got.split(), expected.split()
    if len(got_tokens) != len(want_tokens):
        return False
    for g, w in zip(got_tokens, want_tokens, strict=True):
        if g == w:
            continue
        gf, wf = _as_float(g), _as_float(w)
        if gf is None or wf is None or not _numbers_close(gf, wf, tol):
            return False
    return True


def values_match(got: Any, expected: Any, tol: float) -> bool:
    """Deep equality of JSON values; numbers within `tol`, booleans never equal numbers."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        return _numbers_close(float(got), float(expected), tol)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(
            values_match(g, w, tol) for g, w in zip(got, expected, strict=True)
        )
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(
            values_match(got[k], expected[k], tol) for k in got
        )
    return got == expected
