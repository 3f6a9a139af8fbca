"""Best-of-k: independent samples from the frozen model until one passes."""

from __future__ import annotations

from .base import Strategy


class BestOfK(Strategy):
    name = "best_of_k"
