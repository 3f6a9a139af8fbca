"""Several sessions' SDPO updates in shared passes against the same updates one by one.

    .venv/bin/python bench/joint_update.py                              # the toy model, 8 sessions
    .venv/bin/python bench/joint_update.py --model smollm2-135m-instruct --tokens 64 --repeats 1

Each of --sessions sessions has its own adapter (perturbed, as after some updates), problem and
feedback, and a failed batch of the profile's num_generations attempts of --tokens random
tokens. From the same starting weights and optimizer states, the script times every
session's update alone, one after another (what a worker does with SDPO_WORKER_BATCH_UPDATE
off), and all of them as one joint update (worker/joint_update.py, what it does with it on),
side by side, best of --repeats. It prints both, their ratio, and the largest difference
between the weights each way ends with (float rounding only, if the joint update is right).

Writes joint_update-<model>-<device>-<sessions>.json under --out (default bench/results).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sessions(loaded, params, count: int, tokens: int):
    import torch

    from worker.adapter import SessionAdapter
    from worker.joint_update import UpdateRequest
    from worker.update import DistillBatch, make_optimizer

    generator = torch.Generator().manual_seed(0)
    vocab, rows = loaded.model.config.vocab_size, params.num_generations
    requests = []
    for i in range(count):
        adapter = SessionAdapter(loaded.model, params, seed=i)
        with torch.no_grad():
            for p in adapter.student_params():
                p.add_(0.01 * torch.randn(p.shape, generator=generator).to(p))
        prompt = loaded.chat_ids(f"Write a function that returns the sum of the first {i + 2} "
                                 "numbers of a list.")  # fmt: skip
        feedback = [
            loaded.chat_ids(f"It failed: case {j} returned {i + j}, expected {i + j + 1}. " * 3)
            for j in range(rows)
        ]
        batch = DistillBatch(
            student_contexts=[prompt] * rows,
            teacher_contexts=[prompt + f for f in feedback],
            attempts=torch.randint(vocab, (rows, tokens), generator=generator).tolist(),
            sampler_logprobs=[[-5.0] * tokens] * rows,
        )
        requests.append(UpdateRequest(adapter, make_optimizer(adapter, params), batch, params))
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=None, help="per attempt (default: max)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: the model profile's")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = parser.parse_args()

    import torch

    from sdpo.settings import Settings
    from worker.joint_update import can_join, joint_update, solo_update
    from worker.profiles import resolve_params
    from worker.runtime import build_runtime

    torch.set_num_threads(args.threads)
    settings = Settings(dtype=args.dtype) if args.dtype else None
    loaded = build_runtime("hf", args.model, device=args.device, settings=settings).engine.loaded
    params = resolve_params("sdpo", None, profile=loaded.profile)
    tokens = args.tokens or params.max_completion_length
    requests = sessions(loaded, params, args.sessions, tokens)
    assert can_join(requests)
    start = [(r.adapter.state_dict(), r.optimizer.state_dict()) for r in requests]

    def restore() -> None:
        for r, (weights, optimizer) in zip(requests, start, strict=True):
            r.adapter.load_state_dict(weights)
            r.optimizer.load_state_dict(optimizer)

    def synced() -> float:
        if loaded.model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    best = {"alone": float("inf"), "joint": float("inf")}
    finals = {}
    for repeat in range(args.repeats):
        for way in ("alone", "joint") if repeat % 2 == 0 else ("joint", "alone"):
            restore()
            started = synced()
            if way == "alone":
                for r in requests:
                    solo_update(r)
            else:
                joint_update(requests)
            best[way] = min(best[way], synced() - started)
            finals[way] = [r.adapter.state_dict() for r in requests]
    largest = max(
        float((a[name].float() - b[name].float()).abs().max())
        for a, b in zip(finals["alone"], finals["joint"], strict=True)
        for name in a
    )
    report = {
        "model": args.model, "device": str(loaded.model.device), "dtype": str(loaded.model.dtype),
        "sessions": args.sessions, "rows_per_session": params.num_generations,
        "tokens_per_attempt": tokens, "num_iterations": params.num_iterations,
        "threads": args.threads, "alone_s": round(best["alone"], 3),
        "joint_s": round(best["joint"], 3), "speedup": round(best["alone"] / best["joint"], 2),
        "largest_weight_difference": largest,
    }  # fmt: skip
    device = loaded.model.device.type
    out = args.out / f"joint_update-{args.model}-{device}-{args.sessions}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.model} ({report['device']}, {report['dtype']}, {args.threads} thread(s)): "
          f"{args.sessions} sessions x {params.num_generations} attempts x {tokens} tokens, "
          f"{params.num_iterations} optimizer step(s) each")  # fmt: skip
    print(f"one by one {report['alone_s']:.3f} s, joint {report['joint_s']:.3f} s: "
          f"{report['speedup']:.2f}x; largest weight difference {largest:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
