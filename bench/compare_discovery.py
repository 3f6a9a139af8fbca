"""Two discovery runs of one plan, side by side: is the second inside the first's intervals?

    .venv/bin/sdpo bench discovery --budget 128 --problems 20 --seeds 10 \\
        --out bench/results/discovery-toy-seq
    .venv/bin/sdpo bench discovery --budget 128 --problems 20 --seeds 10 --concurrency 8 \\
        --out bench/results/discovery-toy-c8
    .venv/bin/python bench/compare_discovery.py bench/results/discovery-toy-seq \\
        bench/results/discovery-toy-c8

For each strategy, prints discovery@k of both runs at k = 8, 16, 32, ... up to the budget,
marks where the second lies outside the first's 90% interval, and counts the runs (same
strategy, problem and seed) whose attempts are identical (equal attempt digests) or whose
first pass came at the same attempt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(folder: Path) -> dict:
    return json.loads((folder / "discovery.json").read_text())


def matching(a: dict | None, b: dict, field: str) -> bool:
    return a is not None and a[field] == b[field]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="folder of the run whose intervals count")
    parser.add_argument("other", type=Path)
    args = parser.parse_args()
    reference, other = load(args.reference), load(args.other)
    budget = reference["config"]["budget"]
    ks = [k for k in (8, 16, 32, 64, 128, 256, 512) if k <= budget]
    runs = {(r["strategy"], r["problem"], r["seed"]): r for r in reference["runs"]}
    print(f"{args.other} against {args.reference} (its 90% intervals); * = outside")
    outside = 0
    for group in ("strategies", "controls"):
        for name, ref in reference.get(group, {}).items():
            mine = other.get(group, {}).get(name)
            if mine is None:
                continue
            cells = []
            for k in ks:
                lo, hi = ref["discovery_ci90"]["lo"][str(k)], ref["discovery_ci90"]["hi"][str(k)]
                value = mine["discovery"][str(k)]
                mark = "*" if not lo <= value <= hi else " "
                outside += mark == "*"
                cells.append(f"@{k} {value:.2f}{mark}[{lo:.2f}, {hi:.2f}]")
            pairs = [
                (runs.get((r["strategy"], r["problem"], r["seed"])), r)
                for r in other["runs"]
                if r["strategy"] == name
            ]
            same = sum(matching(a, b, "attempts_digest") for a, b in pairs)
            first = sum(matching(a, b, "first_success") for a, b in pairs)
            print(f"{name:<26} " + "  ".join(cells))
            print(f"{'':<26} identical attempts {same}/{len(pairs)}, "
                  f"same first pass {first}/{len(pairs)}")  # fmt: skip
    for key in ("attempts_ratio_vs_best_of_k", "wall_ratio_vs_best_of_k"):
        print(f"{key}: {reference.get(key)} -> {other.get(key)}")
    before, after = reference.get("attempts_ratio_ci90"), other.get("attempts_ratio_ci90")
    print(f"ci90 of the attempts ratio: {before} -> {after}; cells outside: {outside}")


if __name__ == "__main__":
    main()
