"""Engine benchmark: seconds per SDPO step, phase by phase, on the hf and the vllm engine, and
what batching several sessions into one vLLM call buys.

1. Steps: the same hard problem, seed and batch size through the real SDPO strategy (real
   sandbox) on the hf and the vllm engine, taking turns step by step; one warm-up step each
   (kernels, compilation, the first adapter version), then mean seconds per learning step of
   each phase (generate, judge, teacher, train, sync) from the step records. The engines draw
   different tokens from the same seed, so the mean completion length comes with the times.
2. Sessions: k sessions (own adapter, own problem), each sampling a batch: one vLLM call per
   session, one after another, against one vLLM call for all of them (identical samples), and
   the hf engine one after another for reference.

Writes bench/results/engine.json. Run in the venv that has vLLM: `make bench-engine`, or
`.venv-vllm/bin/python bench/engine_step.py --steps 4 --sessions 1,2,4`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from discovery.hardset import load_hard_set
from discovery.problems import heldout_problem
from sandbox import Sandbox
from sdpo.params import SDPOParams
from sdpo.settings import Settings
from worker.adapter import SessionAdapter
from worker.engine import HFEngine
from worker.generation import SamplingConfig
from worker.model import load_model
from worker.records import PHASES
from worker.strategies import Problem, Runtime, make_strategy


def hard_problem(rank: int) -> Problem:
    return heldout_problem(load_hard_set()["problems"][rank]["index"])


STEP_PARAMS = {"num_generations": 8}  # steps of 8 attempts, as the figures in README.md


class Session:
    """An SDPO session on one engine that starts afresh whenever it solves the problem (a solved
    step does not update, and the benchmark wants learning steps)."""

    def __init__(self, runtime: Runtime, seed: int) -> None:
        self.runtime, self.seed = runtime, seed
        self.strategy = make_strategy("sdpo", hard_problem(0), STEP_PARAMS, runtime, seed=seed)

    def learning_step(self, generations: int):
        while (record := asyncio.run(self.strategy.step(generations))).first_success:
            self.strategy.close()
            self.seed += 1
            self.strategy = make_strategy(
                "sdpo", hard_problem(0), STEP_PARAMS, self.runtime, seed=self.seed
            )
        return record


def step_phases(runtimes: dict[str, Runtime], steps: int, generations: int, seed: int) -> dict:
    """Mean seconds per phase over `steps` learning steps per engine, after one warm-up step;
    the engines take turns, step by step, so that machine noise hits them alike."""
    sessions = {name: Session(runtime, seed) for name, runtime in runtimes.items()}
    records: dict[str, list] = {name: [] for name in runtimes}
    try:
        for _ in range(steps + 1):
            for name, session in sessions.items():
                records[name].append(session.learning_step(generations))
    finally:
        for session in sessions.values():
            session.strategy.close()
    return {name: _means(rs[1:]) for name, rs in records.items()}


def _means(records: list) -> dict:
    phases = {p: statistics.mean(r.phase_s.get(p, 0.0) for r in records) for p in PHASES}
    tokens = statistics.mean(len(a.token_ids) for r in records for a in r.attempts)
    return {"phase_s": phases, "step_s": sum(phases.values()), "mean_tokens": tokens}


def session_adapters(count: int) -> list[SessionAdapter]:
    """`count` distinct student adapters, each on its own copy of the bundled model."""
    adapters = []
    for i in range(count):
        adapter = SessionAdapter(load_model().model, SDPOParams(), seed=i)
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in adapter._named("student"):
                if "lora_B" in name:  # B starts at zero: make each adapter its own model
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
        adapters.append(adapter)
    return adapters


def _timed(call) -> tuple[float, int]:
    started = time.perf_counter()
    batches = call()
    return time.perf_counter() - started, sum(len(s.token_ids) for b in batches for s in b)


def concurrency(engine, hf: HFEngine, counts: list[int], generations: int, repeats: int) -> dict:
    """Seconds for k sessions' batches: one call each vs one call for all."""
    from worker.engine import BatchRequest

    adapters = session_adapters(max(counts))
    for adapter in adapters:
        engine.sync_adapter(adapter)
    config = SamplingConfig(stop_token_ids=engine.loaded.stop_token_ids, max_new_tokens=160)
    results = {}
    for k in counts:
        prompts = [engine.loaded.chat_ids(hard_problem(i).prompt) for i in range(k)]

        def requests(k=k, prompts=prompts):  # fresh generators: the same seeds every time
            return [
                BatchRequest(prompts[i], generations, config, torch.Generator().manual_seed(i), a)
                for i, a in enumerate(adapters[:k])
            ]

        def one_by_one(k=k):
            return [engine.generate_batch([r])[0] for r in requests(k)]

        def hf_one_by_one():
            return [
                hf.generate(r.prompt_ids, r.n, r.config, generator=r.generator, adapter=r.adapter)
                for r in requests()
            ]

        def together():
            return engine.generate_batch(requests())

        one_by_one()  # warm-up: loads the adapters into vLLM's slots
        rounds = [
            (_timed(one_by_one), _timed(together), _timed(hf_one_by_one)) for _ in range(repeats)
        ]
        seq, batched, hf_s = (statistics.median(r[i][0] for r in rounds) for i in range(3))
        tokens = rounds[0][1][1]
        results[str(k)] = {
            "sequential_s": seq,
            "batched_s": batched,
            "speedup": seq / batched,
            "tokens": tokens,
            "batched_tokens_per_s": tokens / batched,
            "hf_sequential_s": hf_s,
            "hf_tokens": rounds[0][2][1],
        }
    for adapter in adapters:
        engine.release_adapter(adapter)
        adapter.close()
    return results


def start_vllm(cache: Path, eager: bool, sessions: int):
    from worker.vllm_engine import VLLMEngine

    settings = Settings(
        vllm_adapter_dir=cache / "adapters",
        vllm_enforce_eager=eager,
        vllm_max_loras=sessions + 1,  # + the base model's zero adapter: no slot swapping
    )
    return VLLMEngine(load_model(), settings)


def report(figures: dict) -> None:
    hf, vl = figures["steps"]["hf"], figures["steps"]["vllm"]
    print(f"SDPO step of {figures['generations']} attempts, mean of {figures['steps_measured']}")
    print(f"{'phase':<10}{'hf s':>10}{'vllm s':>10}{'hf/vllm':>10}")
    for phase in [*PHASES, "step"]:
        a = hf["step_s"] if phase == "step" else hf["phase_s"][phase]
        b = vl["step_s"] if phase == "step" else vl["phase_s"][phase]
        print(f"{phase:<10}{a:>10.3f}{b:>10.3f}{(a / b if b else float('nan')):>10.2f}")
    print(f"mean completion tokens: hf {hf['mean_tokens']:.1f}, vllm {vl['mean_tokens']:.1f}")
    print("sessions  one-call-each s  one-call s  speedup  tokens/s  hf one-by-one s")
    for k, c in figures["sessions"].items():
        print(
            f"{k:>8}{c['sequential_s']:>17.2f}{c['batched_s']:>12.2f}{c['speedup']:>9.2f}"
            f"{c['batched_tokens_per_s']:>10.0f}{c['hf_sequential_s']:>17.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="learning steps measured per engine")
    parser.add_argument("--generations", type=int, default=8, help="attempts per step")
    parser.add_argument("--sessions", default="1,2,4", help="session counts to batch")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per session count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    counts = [int(k) for k in args.sessions.split(",")]

    args.out.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix="engine-bench-", dir=args.out))
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache / "vllm"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    sandbox = Sandbox()
    try:
        hf, engine = HFEngine(load_model()), start_vllm(cache, args.eager, max(counts))
        runtimes = {"hf": Runtime(hf, sandbox), "vllm": Runtime(engine, sandbox)}
        steps = step_phases(runtimes, args.steps, args.generations, args.seed)
        sessions = concurrency(engine, hf, counts, args.generations, args.repeats)
        engine.close()
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    import vllm

    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, vllm {vllm.__version__}, eager {args.eager}",
        "generations": args.generations,
        "steps_measured": args.steps,
        "steps": steps,
        "step_ratio_hf_over_vllm": steps["hf"]["step_s"] / steps["vllm"]["step_s"],
        "sessions": sessions,
    }
    (args.out / "engine.json").write_text(json.dumps(figures, indent=2))
    report(figures)


if __name__ == "__main__":
    main()
