"""The service path against the benchmark's: per-step phase seconds of the same SDPO sessions.

    .venv/bin/python bench/service_step.py                     # 3 toy sessions, budget 64
    .venv/bin/python bench/service_step.py --threads 0 1 2     # 0: the worker's default

The same toy hard-set problems and seeds run three ways, one after the other on this machine:
in this process through the discovery benchmark's runner (one torch thread, as the benchmark
pins it), and through a real `sdpo serve` (embedded Redis, the gateway, one worker process)
with each SDPO_TORCH_THREADS given (0 leaves it unset: `sdpo serve` then gives its worker
every core). Every way samples the same attempts (the runs' first passes are compared), so the
seconds per step compare like for like. Prints the mean seconds per step of each phase and
each way's ratio to the benchmark's.

Writes bench/results/service_step.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PHASES = ("generate", "judge", "teacher", "train", "sync", "wait")


def per_step(phase_totals: list[dict[str, float]], steps: int) -> dict[str, float]:
    return {p: round(sum(t.get(p, 0.0) for t in phase_totals) / steps, 4) for p in PHASES}


def bench_path(keys: list[tuple[str, int, int]], budget: int) -> dict:
    """The discovery benchmark's own runner, in this process, on one torch thread."""
    import torch

    from discovery.problems import load_source
    from discovery.run import DiscoveryConfig, run_one
    from worker.profiles import resolve_params
    from worker.runtime import build_runtime

    torch.set_num_threads(1)
    source = load_source("toy")
    config = DiscoveryConfig(out=Path("unused"), budget=budget, model="toy")
    runtime = build_runtime("hf", "toy", device="cpu")
    runs = [asyncio.run(run_one(runtime, source, key, config)) for key in keys]
    per_batch = resolve_params("sdpo", None, profile=runtime.engine.loaded.profile).num_generations
    steps = sum(-(-r.attempts_used // per_batch) for r in runs)
    return {
        "first_success": [r.first_success for r in runs],
        "steps": steps,
        "per_step_s": per_step([r.phase_s for r in runs], steps),
    }


def service_path(keys: list[tuple[str, int, int]], budget: int, threads: int) -> dict:
    """A real `sdpo serve`; the sessions are submitted one after another, as the bench runs
    them."""
    from discovery.problems import load_source
    from sdpo.client import SdpoClient
    from sdpo_serve.embedded import free_port

    source = load_source("toy")
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "SDPO_DATA_DIR": data, "SDPO_PORT": str(port)}
        env.pop("SDPO_TORCH_THREADS", None)
        if threads:
            env["SDPO_TORCH_THREADS"] = str(threads)
        server = subprocess.Popen(
            [sys.executable, "-m", "sdpo_serve.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url)
            totals, firsts, steps = [], [], 0
            for _, index, seed in keys:
                entry = source.entries[index].model_dump(mode="json")
                body = {
                    "prompt": entry["prompt"],
                    "verifier": entry["verifier"],
                    "strategy": "sdpo",
                    "seed": seed,
                    "budget": {"max_attempts": budget},
                }
                with SdpoClient(url) as client:
                    final = client.wait(client.create_problem(body).id, poll_s=0.2)
                firsts.append(final.first_success_attempt)
                steps += len(final.steps)
                totals += [s.phase_s for s in final.steps]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    return {"first_success": firsts, "steps": steps, "per_step_s": per_step(totals, steps)}


def wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready within {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/service_step.json")
    args = parser.parse_args()

    from discovery.problems import load_source
    from discovery.run import DiscoveryConfig, load_checked_hard_set

    config = DiscoveryConfig(out=Path("unused"), budget=args.budget, model="toy")
    hard = load_checked_hard_set(config, load_source("toy"))
    keys = [("sdpo", p["index"], seed) for seed, p in enumerate(hard["problems"][: args.sessions])]
    ways = {"bench (1 thread, in process)": bench_path(keys, args.budget)}
    for threads in args.threads:
        label = f"sdpo serve, SDPO_TORCH_THREADS={threads or 'unset'}"
        ways[label] = service_path(keys, args.budget, threads)
    base = ways["bench (1 thread, in process)"]["per_step_s"]
    report = {"sessions": args.sessions, "budget": args.budget, "cpus": os.cpu_count(),
              "ways": ways}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.sessions} toy SDPO sessions, budget {args.budget}: mean seconds per step")
    print(f"{'way':<36}{'steps':>6}  " + "".join(f"{p:>10}" for p in PHASES) + "   first passes")
    for label, way in ways.items():
        cells = "".join(f"{way['per_step_s'][p]:>10.3f}" for p in PHASES)
        print(f"{label:<36}{way['steps']:>6}  {cells}   {way['first_success']}")
        ratios = "".join(  # none for a phase under a millisecond a step (sync on the hf engine)
            f"{way['per_step_s'][p] / base[p]:>9.2f}x" if base[p] >= 1e-3 else f"{'':>10}"
            for p in PHASES
        )
        print(f"{'  ratio to the bench':<36}{'':>6}  {ratios}")


if __name__ == "__main__":
    main()
