"""How often co-batching changes a sampled token, and what it saves, on the hf engine.

    .venv/bin/python bench/cobatch_tokens.py                                  # the toy model
    .venv/bin/python bench/cobatch_tokens.py --model smollm2-135m-instruct \\
        --problem-set bench/results/problemsets/humaneval.jsonl

Several sessions' requests (each a different problem, every other one with its own LoRA
adapter, perturbed as after some updates) are sampled twice with the same seeds: each alone,
as a worker running one session samples, and all in one batch, as the worker's scheduler
samples them (left-padded prompts, per-row adapters). A row's uniforms are the same either
way, so its tokens can differ only where padding or the batch shape changed float rounding
enough to move a token across a sampling boundary. Prints the rows that came out identical,
the tokens compared before the first difference, the largest log-prob difference on them, and
the wall time of both ways (one torch thread, side by side in this process).

Writes cobatch_tokens-<model>.json into --out (bench/results/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_difference(a: list[int], b: list[int]) -> int:
    """The index of the first token where a and b differ (the shorter length if none)."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--problem-set", default="toy")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rows", type=int, default=None, help="per session (default: SDPO's)")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per session")
    parser.add_argument("--perturbation", type=float, default=0.01, help="std of LoRA B noise")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = parser.parse_args()

    import torch

    from discovery.problems import load_source
    from sdpo.params import SDPOParams
    from worker.adapter import SessionAdapter
    from worker.engine import BatchRequest
    from worker.generation import SamplingConfig
    from worker.profiles import resolve_params
    from worker.runtime import build_runtime

    torch.set_num_threads(1)
    runtime = build_runtime("hf", args.model, device=args.device)
    engine, loaded = runtime.engine, runtime.engine.loaded
    params: SDPOParams = resolve_params("sdpo", None, profile=loaded.profile)  # type: ignore[assignment]
    rows = args.rows or params.num_generations
    config = SamplingConfig(
        loaded.stop_token_ids, params.temperature, params.top_p, params.max_completion_length
    )
    source = load_source(args.problem_set)
    prompts = [loaded.chat_ids(e.prompt) for e in source.entries[: args.sessions]]
    adapters: list[SessionAdapter | None] = []
    for i in range(len(prompts)):
        if i % 2 == 0:
            adapters.append(None)
            continue
        adapter = SessionAdapter(loaded.model, params, seed=i)
        with torch.no_grad():
            for p in adapter.student_params():
                p.add_(args.perturbation * torch.randn_like(p))
        adapters.append(adapter)

    def requests(seed: int) -> list[BatchRequest]:
        return [
            BatchRequest(p, rows, config, torch.Generator().manual_seed(seed * 1000 + i), a)
            for i, (p, a) in enumerate(zip(prompts, adapters, strict=True))
        ]

    same_rows = total_rows = compared = differing = 0
    worst, solo_s, batch_s = 0.0, 0.0, 0.0
    for seed in range(args.repeats):
        started = time.perf_counter()
        alone = [engine.generate_batch([r])[0] for r in requests(seed)]
        solo_s += time.perf_counter() - started
        started = time.perf_counter()
        together = engine.generate_batch(requests(seed))
        batch_s += time.perf_counter() - started
        for solo, batched in zip(alone, together, strict=True):
            for a, b in zip(solo, batched, strict=True):
                total_rows += 1
                same_rows += a.token_ids == b.token_ids
                k = first_difference(a.token_ids, b.token_ids)
                compared += k + (a.token_ids != b.token_ids)
                differing += a.token_ids != b.token_ids
                diffs = [abs(x - y) for x, y in zip(a.logprobs[:k], b.logprobs[:k], strict=True)]
                worst = max([worst, *diffs])
    report = {
        "model": args.model,
        "device": args.device,
        "problem_set": str(args.problem_set),
        "sessions": len(prompts),
        "rows_per_session": rows,
        "max_new_tokens": config.max_new_tokens,
        "repeats": args.repeats,
        "perturbation": args.perturbation,
        "rows_identical": same_rows,
        "rows": total_rows,
        "tokens_compared": compared,
        "tokens_differing": differing,
        "max_logprob_diff": worst,
        "solo_s": round(solo_s, 2),
        "batched_s": round(batch_s, 2),
        "speedup": round(solo_s / batch_s, 2),
    }
    out = args.out / f"cobatch_tokens-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{args.model}: {len(prompts)} sessions x {rows} rows x {args.repeats} seeds, half with "
        f"an adapter: {same_rows}/{total_rows} rows identical to their solo run; "
        f"{differing} differing tokens in {compared} compared (a row is compared up to and "
        f"including its first difference); largest log-prob difference before it {worst:.2e}. "
        f"Wall: {solo_s:.1f} s alone, {batch_s:.1f} s batched ({solo_s / batch_s:.2f}x)."
    )


if __name__ == "__main__":
    main()
