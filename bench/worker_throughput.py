"""One worker process, many SDPO sessions: throughput by the number of sessions run at once.

    .venv/bin/python bench/worker_throughput.py                          # 32 sessions, budget 64
    .venv/bin/python bench/worker_throughput.py --sessions 8 --budget 16 --levels 1 4

The sessions are the toy hard set's first problems, one seed each, and every level runs the same
ones through the worker's own scheduling on one model (worker/compute.py and
worker/batching.py, via the discovery benchmark's runner): concurrency 1 is a worker that runs
one session at a time. At higher levels the sessions ready to sample share each forward pass
(one engine call per tick). The levels run one after the other in this one process (one torch
thread, as a worker on a shared CPU would), so machine noise hits them alike. For each level it
prints sessions per minute, attempts per second and the ratio to concurrency 1; sessions per
generation tick; the phase seconds per attempt (generate: the model's time in ticks, not the
sum of every session's share); and the SDPO update (teacher + train + sync) against
generation. The levels above 1 run twice by default: with each SDPO session updated alone
between the others' turns, and with the sessions ready to learn updated in shared passes
(worker/joint_update.py, `--joint-update`). It also counts the runs whose attempts are exactly
those of concurrency 1 (equal attempt digests; co-batched rows may differ in float rounding,
which can flip a sampled token) and the runs solved, so the speed is not bought with other
results.

Writes bench/results/worker_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("generate", "judge", "teacher", "train", "sync", "wait")


async def run_level(runtime, source, config, keys: list, level: tuple[int, bool]) -> dict:
    from discovery.run import run_concurrently

    concurrency, joint = level
    runtime.updates.together = joint
    by_key = {}
    log, updates = runtime.generations.log, runtime.updates.log
    ticks, requests, generating = log.ticks, log.requests, log.seconds
    update_ticks, updated, updating = updates.ticks, updates.requests, updates.seconds
    started = time.perf_counter()
    await run_concurrently(
        runtime, source, replace(config, concurrency=concurrency), keys,
        lambda run: by_key.__setitem__((run.strategy, run.problem, run.seed), run),
    )  # fmt: skip
    wall = time.perf_counter() - started
    runs = [by_key[key] for key in keys]  # in plan order, so that digests compare
    attempts = sum(r.attempts_used for r in runs)
    phases = {p: sum(r.phase_s.get(p, 0.0) for r in runs) for p in PHASES}
    # a shared tick is in every one of its sessions' generate phases: count the model's time
    phases["generate"] = log.seconds - generating
    # likewise a joint update: the model's update seconds, split as the sessions' phases are
    learned = phases["teacher"] + phases["train"]
    for phase in ("teacher", "train"):
        phases[phase] *= (updates.seconds - updating) / learned if learned else 0.0
    per_tick = (log.requests - requests) / max(log.ticks - ticks, 1)
    per_update = (updates.requests - updated) / max(updates.ticks - update_ticks, 1)
    update = phases["teacher"] + phases["train"] + phases["sync"]
    return {
        "concurrency": concurrency,
        "joint_update": joint,
        "wall_s": round(wall, 2),
        "sessions_per_min": round(len(runs) / wall * 60, 2),
        "attempts_per_s": round(attempts / wall, 3),
        "attempts": attempts,
        "solved": sum(r.first_success is not None for r in runs),
        "phase_s_per_attempt": {p: round(v / attempts, 4) for p, v in phases.items()},
        "update_over_generate": round(update / phases["generate"], 3),
        "sessions_per_tick": round(per_tick, 2),
        "sessions_per_update": round(per_update, 2),
        "digests": [r.attempts_digest for r in runs],
    }


async def main_async(args: argparse.Namespace) -> dict:
    import torch

    from discovery.problems import load_source
    from discovery.run import DiscoveryConfig, load_checked_hard_set
    from sdpo.settings import Settings
    from worker.runtime import build_runtime

    torch.set_num_threads(args.threads)
    source = load_source("toy")
    config = DiscoveryConfig(out=Path("unused"), budget=args.budget, model="toy")
    hard = load_checked_hard_set(config, source)
    problems = [p["index"] for p in hard["problems"]][: args.sessions]
    if len(problems) < args.sessions:
        raise SystemExit(f"--sessions {args.sessions}: the toy hard set has {len(problems)}")
    keys = [("sdpo", index, seed) for seed, index in enumerate(problems)]
    settings = Settings(dtype=args.dtype) if args.dtype else None
    runtime = build_runtime("hf", "toy", device=args.device, settings=settings)
    joint = {"off": [False], "on": [True], "both": [False, True]}[args.joint_update]
    plan = [(c, j) for j in joint for c in args.levels if c > 1 or j == joint[0]]
    levels = [await run_level(runtime, source, config, keys, level) for level in plan]
    first, first_digests = levels[0], levels[0]["digests"]
    for level in levels:
        level["speedup"] = round(level["attempts_per_s"] / first["attempts_per_s"], 2)
        same = sum(a == b for a, b in zip(level.pop("digests"), first_digests, strict=True))
        level["same_attempts_as_first_level"] = f"{same}/{len(first_digests)}"
    return {"sessions": args.sessions, "budget": args.budget, "threads": args.threads,
            "device": str(runtime.engine.loaded.model.device),
            "dtype": str(runtime.engine.loaded.model.dtype), "levels": levels}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--dtype", default=None, help="default: the model profile's")
    parser.add_argument(
        "--joint-update", choices=["off", "on", "both"], default="both",
        help="update waiting sessions in shared passes (SDPO_WORKER_BATCH_UPDATE); both: the "
        "levels above 1 run once each way",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/worker_throughput.json")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['sessions']} SDPO sessions (toy hard set), budget {report['budget']}, "
          f"{report['threads']} torch thread(s), one process, {report['device']} "
          f"{report['dtype']}")  # fmt: skip
    print(f"{'at once':>8}{'joint':>6}{'wall s':>9}{'sess/min':>10}{'att/s':>8}{'x c=1':>7}"
          f"{'solved':>8}{'per tick':>9}{'per upd':>9}{'update/gen':>11}  same attempts  "
          "phase s per attempt")  # fmt: skip
    for lv in report["levels"]:
        phases = " ".join(f"{p} {v:.3f}" for p, v in lv["phase_s_per_attempt"].items())
        joint = "on" if lv["joint_update"] else "off"
        print(f"{lv['concurrency']:>8}{joint:>6}{lv['wall_s']:>9.1f}{lv['sessions_per_min']:>10.1f}"
              f"{lv['attempts_per_s']:>8.2f}{lv['speedup']:>7.2f}{lv['solved']:>8}"
              f"{lv['sessions_per_tick']:>9.2f}{lv['sessions_per_update']:>9.2f}"
          f"{lv['update_over_generate']:>11.2f}"
              f"  {lv['same_attempts_as_first_level']:>13}  {phases}")  # fmt: skip


if __name__ == "__main__":
    main()
