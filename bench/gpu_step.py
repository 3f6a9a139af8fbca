"""Seconds per SDPO step on a GPU, phase by phase (deploy/gpu_check.sh runs this).

Two measurements, each side by side in one run:
1. The bundled model through the real strategy (hf engine, real sandbox): the same problem and
   seed on CUDA and on this machine's CPU.
2. Model shapes users run (Qwen3 0.6B/8B configs, random weights: nothing is downloaded) in
   bf16: sample a batch with the hf engine's sampler, score it under the teacher context, and
   run the distillation update. Random weights never emit eos, so every attempt has the full
   length: a worst case for the step time.

    python bench/gpu_step.py --out results/ [--device cuda] [--shapes qwen3-0.6b,qwen3-8b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from discovery.hardset import load_hard_set
from discovery.problems import heldout_problem
from sandbox import Sandbox
from sdpo.params import SDPOParams
from worker.adapter import SessionAdapter
from worker.engine import HFEngine
from worker.generation import SamplingConfig, sample
from worker.model import load_model
from worker.strategies import Runtime, make_strategy
from worker.update import DistillBatch, distill, make_optimizer, teacher_hidden

SHAPES = {
    # name: (hidden, intermediate, layers, heads, kv heads); vocab 151936, head_dim 128
    "tiny": (64, 128, 2, 4, 2),  # for a dry run on the CPU
    "qwen3-0.6b": (1024, 3072, 28, 16, 8),
    "qwen3-8b": (4096, 12288, 36, 32, 8),
}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bundled_steps(device: str, steps: int) -> dict:
    """Mean phase seconds per SDPO step of 8 attempts on the bundled model."""
    loaded = load_model(device=device)
    problem = heldout_problem(load_hard_set()["problems"][0]["index"])
    runtime = Runtime(HFEngine(loaded), Sandbox())
    strategy = make_strategy("sdpo", problem, {"num_generations": 8}, runtime, seed=0)
    phases: dict[str, list[float]] = {}
    try:
        for _ in range(steps + 1):  # the first step warms up kernels and caches
            record = asyncio.run(strategy.step(8))
            for phase, seconds in record.phase_s.items():
                phases.setdefault(phase, []).append(seconds)
    finally:
        strategy.close()
    return {p: round(statistics.mean(v[1:]), 4) for p, v in phases.items() if len(v) > 1}


def synthetic_step(shape: str, device: str, completion: int, prompt_len: int) -> dict:
    """Phase seconds of one SDPO step (8 attempts) on a random-weight model of a real shape."""
    hidden, inter, layers, heads, kv = SHAPES[shape]
    config = Qwen3Config(
        vocab_size=151936,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=128 if shape != "tiny" else 16,
        max_position_embeddings=4096,
        tie_word_embeddings=shape == "qwen3-0.6b",
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype).eval()
    model.requires_grad_(False)
    params = SDPOParams()
    adapter = SessionAdapter(model, params, seed=0)
    optimizer = make_optimizer(adapter, params)
    generator = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(1000, 100000, (prompt_len,), generator=generator).tolist()
    feedback_ids = torch.randint(1000, 100000, (prompt_len // 2,), generator=generator).tolist()
    sampling = SamplingConfig(stop_token_ids=(0,), max_new_tokens=completion)
    result: dict[str, float] = {}
    try:
        for round_ in range(2):  # round 0 warms up
            times = {}
            sync(device)
            started = time.perf_counter()
            with torch.inference_mode():
                samples = sample(adapter.model, prompt_ids, 8, sampling, generator=generator)
            sync(device)
            times["generate"] = time.perf_counter() - started
            batch = DistillBatch(
                student_contexts=[prompt_ids] * 8,
                teacher_contexts=[prompt_ids + feedback_ids] * 8,
                attempts=[s.token_ids for s in samples],
                sampler_logprobs=[s.logprobs for s in samples],
            )
            started = time.perf_counter()
            teacher = teacher_hidden(adapter, batch)
            sync(device)
            times["teacher"] = time.perf_counter() - started
            started = time.perf_counter()
            distill(adapter, optimizer, batch, teacher, params)
            sync(device)
            times["train"] = time.perf_counter() - started
            if round_:
                result = {k: round(v, 4) for k, v in times.items()}
    finally:
        adapter.close()
    if device == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    result["tokens_per_attempt"] = completion
    result["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--shapes", default="qwen3-0.6b,qwen3-8b")
    parser.add_argument("--completion", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=256)
    args = parser.parse_args()
    report: dict = {"device": args.device}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    report["torch"] = torch.__version__
    report["bundled"] = {
        args.device: bundled_steps(args.device, args.steps),
        "cpu": bundled_steps("cpu", args.steps),
    }
    print(json.dumps(report["bundled"]), flush=True)
    report["shapes"] = {}
    for shape in filter(None, args.shapes.split(",")):
        report["shapes"][shape] = synthetic_step(
            shape, args.device, args.completion, args.prompt_len
        )
        print(shape, json.dumps(report["shapes"][shape]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_step.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
