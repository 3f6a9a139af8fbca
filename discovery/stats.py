"""Discovery statistics: discovery@k, bootstrap intervals and the attempts ratio.

A run is one (problem, seed) pair; its datum is the index of its first passing attempt
(1-based), or None when the budget ran out. Intervals resample problems, then seeds within
each problem (a two-level bootstrap), since seeds of one problem are not independent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FirstSuccess = int | None


def discovery_curve(first: Sequence[FirstSuccess], budget: int) -> np.ndarray:
    """(budget,) array: entry k-1 is the fraction of runs solved within k attempts."""
    hits = np.zeros(budget + 1)
    for index in first:
        if index is not None and index <= budget:
            hits[index] += 1
    return np.cumsum(hits)[1:] / max(len(first), 1)


def bootstrap_band(
    runs: dict[str, list[FirstSuccess]],
    budget: int,
    *,
    level: float = 0.90,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise `level` interval of the discovery curve; `runs` maps problem -> seeds' data."""
    rng = np.random.default_rng(seed)
    problems = list(runs)
    curves = np.empty((n_boot, budget))
    for b in range(n_boot):
        picked = rng.choice(len(problems), size=len(problems), replace=True)
        sample: list[FirstSuccess] = []
        for p in picked:
            seeds = runs[problems[p]]
            sample += [seeds[i] for i in rng.choice(len(seeds), size=len(seeds), replace=True)]
        curves[b] = discovery_curve(sample, budget)
    tail = (1 - level) / 2
    return np.quantile(curves, tail, axis=0), np.quantile(curves, 1 - tail, axis=0)


def attempts_ratio_interval(
    sdpo: dict[str, list[FirstSuccess]],
    best_of_k: dict[str, list[FirstSuccess]],
    budget: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """90% interval of the attempts ratio (`attempts_ratio`) at best-of-k's discovery@budget.

    Both strategies are resampled together (the same problems, the same seed positions), since
    they ran on the same problems and seeds. A resample where SDPO never reaches the target
    counts as ratio 0; one where best-of-k solves nothing is skipped (no target)."""
    rng = np.random.default_rng(seed)
    problems = list(best_of_k)
    ratios = []
    for _ in range(n_boot):
        ours: list[FirstSuccess] = []
        theirs: list[FirstSuccess] = []
        for p in rng.choice(len(problems), size=len(problems), replace=True):
            key = problems[p]
            for i in rng.choice(len(best_of_k[key]), size=len(best_of_k[key]), replace=True):
                ours.append(sdpo[key][i])
                theirs.append(best_of_k[key][i])
        ratio = attempts_ratio(discovery_curve(ours, budget), discovery_curve(theirs, budget))
        if ratio is not None:
            ratios.append(ratio)
    if not ratios:
        return None
    return float(np.quantile(ratios, 0.05)), float(np.quantile(ratios, 0.95))


def attempts_ratio(sdpo: np.ndarray, best_of_k: np.ndarray) -> float | None:
    """Attempts best-of-k needs to reach its own discovery@budget, over the attempts SDPO needs
    to reach the same level: 0 if SDPO never does, None if best-of-k solves nothing. Where
    best-of-k is still climbing at the budget this is budget / SDPO's attempts; where it levels
    off earlier, the budget would flatter whichever strategy levels off with it."""
    target = best_of_k[-1]
    if target <= 0:
        return None
    needed = attempts_to_reach(sdpo, target)
    return attempts_to_reach(best_of_k, target) / needed if needed else 0.0


def attempts_to_reach(curve: np.ndarray, target: float) -> int | None:
    """Fewest attempts k with discovery@k >= target (None if never reached)."""
    reached = np.nonzero(curve >= target - 1e-12)[0]
    return int(reached[0]) + 1 if len(reached) else None


def mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None
