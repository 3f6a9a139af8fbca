"""Phase timing: every phase of a step is timed into the step's record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(phase_s: dict[str, float], phase: str) -> Iterator[None]:
    """Add the wall seconds of the block to phase_s[phase]."""
    started = time.perf_counter()
    try:
        yield
    finally:
        phase_s[phase] = phase_s.get(phase, 0.0) + time.perf_counter() - started
