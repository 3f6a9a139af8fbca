"""The real model on the CPU: one SDPO step of SmolLM2-135M-Instruct, phase by phase, and its
decode speed against the memory-bandwidth floor.

    .venv/bin/python bench/real_model_step.py                       # this tree
    git worktree add /tmp/sdpo-before 825b76d                       # the code before real models
    .venv/bin/python bench/real_model_step.py --before-tree /tmp/sdpo-before

1. One SDPO step of 8 attempts of at most 256 tokens (the profile's own num_iterations, 1),
   on a verifier nothing passes, so every phase runs. With --before-tree, the same step runs
   in that tree too, in the same run, alternating, so machine noise hits both alike. Each step
   runs in a fresh process of its own tree (the converted model folder is shared).
2. Decode milliseconds per token at batch 1, 8 and 32, without and with a session's LoRA
   adapter (as the hf engine samples it, merged; and through peft's LoRA layers), against the
   floor: the weight bytes one decode step reads over the memcpy bandwidth measured in the
   same run.

Writes bench/results/real_model_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
PROBLEM = {
    "prompt": "Write a Python function double(x) that returns twice its argument.",
    "verifier": {
        "type": "function_tests",
        "entry_point": "double",
        "tests": [{"args": [2], "expected": "never equal"}],  # nothing passes: every phase runs
    },
}
STEP_PARAMS = {"num_generations": 8, "max_completion_length": 256, "num_iterations": 1}

# Runs in a child process, on whichever tree is first on sys.path; only uses the API that both
# the old and the new tree have.
STEP_CHILD = """
import asyncio, json, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from sandbox import Sandbox, parse_spec
from worker.engine import HFEngine
from worker.model import load_model
from worker.strategies import Problem, Runtime, make_strategy
from pathlib import Path
problem = json.loads(sys.argv[2])
started = time.perf_counter()
loaded = load_model(Path(sys.argv[1]))
runtime = Runtime(HFEngine(loaded), Sandbox())
task = Problem(problem["prompt"], parse_spec(problem["verifier"]))
strategy = make_strategy("sdpo", task, json.loads(sys.argv[4]), runtime, seed=0)
load_s = time.perf_counter() - started
record = asyncio.run(strategy.step(max_attempts=8))
strategy.close()
print(json.dumps({"load_s": load_s, "phase_s": record.phase_s,
                  "tokens": [len(a.token_ids) for a in record.attempts]}))
"""


def run_step(tree: Path, folder: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-c", STEP_CHILD, str(folder), json.dumps(PROBLEM), str(threads)]
    argv.append(json.dumps(STEP_PARAMS))
    out = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"step in {tree} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["total_s"] = sum(result["phase_s"].values())
    return result


def memcpy_gb_s(size_mb: int = 512, repeats: int = 5) -> float:
    """Bytes copied per second by one large tensor copy (reads plus writes count once)."""
    import torch

    src = torch.empty(size_mb * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    started = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    return src.numel() * 4 * repeats / (time.perf_counter() - started) / 1e9


def decode_ms(model, batch: int, steps: int = 24, prompt: int = 128) -> float:
    import torch

    from worker.kv_cache import new_cache

    with torch.inference_mode():
        cache = new_cache(model.config, prompt + steps + 1)
        ids = torch.randint(100, 1000, (1, prompt))
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(batch)
        token = torch.randint(100, 1000, (batch, 1))
        started = time.perf_counter()
        for i in range(steps):
            position = torch.full((batch, 1), prompt + i)
            model(input_ids=token, past_key_values=cache, use_cache=True, position_ids=position)
        return (time.perf_counter() - started) / steps * 1000


def decode_table(folder: Path) -> dict:
    """Decode ms per step with and without an adapter, base and peft taking turns."""
    import torch

    from sdpo.params import SDPOParams
    from worker.adapter import SessionAdapter
    from worker.engine import GenerationTwin
    from worker.model import load_model

    loaded = load_model(folder)
    model = loaded.model
    twin = GenerationTwin(model)
    # one decode step reads every weight once; the tied embedding serves as the output layer
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = memcpy_gb_s()
    floor_ms = weight_bytes / (bandwidth * 1e9) * 1000
    rows, merge_ms = [], []
    for batch in (1, 8, 32):
        base = decode_ms(model, batch)
        adapter = SessionAdapter(model, SDPOParams(), seed=0)
        peft = decode_ms(adapter.model, batch)
        with torch.inference_mode():
            started = time.perf_counter()
            with twin.merged(adapter) as merged_model:  # how the hf engine samples an adapter
                merge_ms.append((time.perf_counter() - started) * 1000)
                merged = decode_ms(merged_model, batch)
        adapter.close()
        rows.append(
            {
                "batch": batch,
                "base_ms": round(base, 1),
                "lora_ms": round(merged, 1),
                "lora_overhead": round(merged / base - 1, 3),
                "peft_ms": round(peft, 1),
                "peft_overhead": round(peft / base - 1, 3),
                "base_over_floor": round(base / floor_ms, 2),
            }
        )
    return {
        "weight_bytes": weight_bytes,
        "memcpy_gb_s": round(bandwidth, 1),
        "floor_ms": round(floor_ms, 1),
        "merge_ms_per_batch": round(sum(merge_ms) / len(merge_ms), 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-tree", type=Path, help="a checkout of the code to compare")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/real_model_step.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from sdpo.settings import get_settings
    from worker.catalogue import resolve_model

    folder = resolve_model(MODEL, get_settings().model_cache).folder.resolve()
    trees = {"after": REPO} | ({"before": args.before_tree.resolve()} if args.before_tree else {})
    steps = {name: run_step(tree, folder, args.threads) for name, tree in reversed(trees.items())}
    decode = decode_table(folder)
    report = {"model": MODEL, "threads": args.threads, "params": STEP_PARAMS, "steps": steps}
    report["decode"] = decode
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)


def print_report(report: dict) -> None:
    phases = ("generate", "judge", "teacher", "train", "sync")
    print(f"one SDPO step, 8 attempts x <=256 tokens, {report['threads']} threads (seconds)")
    print(f"{'tree':8}" + "".join(f"{p:>10}" for p in phases) + f"{'total':>10}  tokens")
    for name, step in report["steps"].items():
        cells = "".join(f"{step['phase_s'].get(p, 0.0):>10.2f}" for p in phases)
        print(f"{name:8}{cells}{step['total_s']:>10.2f}  {step['tokens']}")
        update = sum(step["phase_s"].get(p, 0.0) for p in ("teacher", "train", "sync"))
        print(f"{'':8}update / generate = {update / step['phase_s']['generate']:.2f}")
    if len(report["steps"]) == 2:
        ratio = report["steps"]["before"]["total_s"] / report["steps"]["after"]["total_s"]
        print(f"before / after = {ratio:.2f}x")
    decode = report["decode"]
    print(
        f"decode ms per step (floor {decode['floor_ms']} ms = {decode['weight_bytes'] / 1e6:.0f} "
        f"MB of weights at a memcpy of {decode['memcpy_gb_s']} GB/s)"
    )
    for row in decode["rows"]:
        print(
            f"  batch {row['batch']:>2}: base {row['base_ms']:>6} ms ({row['base_over_floor']}x "
            f"floor), with LoRA {row['lora_ms']:>6} ms ({row['lora_overhead']:+.0%}; "
            f"through peft's layers {row['peft_ms']} ms, {row['peft_overhead']:+.0%})"
        )
    print(f"  merging the adapter: {decode['merge_ms_per_batch']} ms once per batch")


if __name__ == "__main__":
    main()
