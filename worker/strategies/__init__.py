"""The three strategies behind one interface, by the names the API uses."""

from __future__ import annotations

from sdpo.params import StrategyName

from ..profiles import resolve_params
from .base import Problem, Runtime, StepInterrupted, Strategy, VerifierFailed
from .best_of_k import BestOfK
from .multi_turn import MultiTurn
from .sdpo import SDPO

STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (SDPO, BestOfK, MultiTurn)}


def make_strategy(
    name: StrategyName, problem: Problem, params: dict | None, runtime: Runtime, *, seed: int
) -> Strategy:
    """Build a strategy with the params in effect: the model's profile, then the runtime's
    overrides, then `params` (raises pydantic.ValidationError naming the field)."""
    resolved = resolve_params(
        name, params, profile=runtime.engine.loaded.profile, overrides=runtime.param_overrides
    )
    return STRATEGIES[name](problem, resolved, runtime, seed=seed)


__all__ = [
    "STRATEGIES",
    "Problem",
    "Runtime",
    "StepInterrupted",
    "Strategy",
    "VerifierFailed",
    "make_strategy",
]
