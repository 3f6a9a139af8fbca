"""What batching the SDPO update across sessions could save: the update's cost by batch rows.

    .venv/bin/python bench/update_rows.py                       # the toy model
    .venv/bin/python bench/update_rows.py --model smollm2-135m-instruct --tokens 128

Times the teacher scoring and the training step (the profile's num_iterations) of one adapter
on failed batches of 4, 8, 16 and 32 attempts, one torch thread, best of --repeats. If 8
sessions' batches of 4 cost 8x one batch of 4 when run as one batch of 32, batching the update
across sessions saves nothing; if they cost 1x, it saves 8x. Prints the seconds and the cost
per row relative to 4 rows.

Writes bench/results/update_rows-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--rows", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--tokens", type=int, default=None, help="per attempt (default: max)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from worker.adapter import SessionAdapter
    from worker.profiles import resolve_params
    from worker.runtime import build_runtime
    from worker.update import DistillBatch, distill, make_optimizer, teacher_hidden

    torch.set_num_threads(1)
    loaded = build_runtime("hf", args.model, device="cpu").engine.loaded
    params = resolve_params("sdpo", None, profile=loaded.profile)
    tokens = args.tokens or params.max_completion_length
    adapter = SessionAdapter(loaded.model, params, seed=0)
    optimizer = make_optimizer(adapter, params)
    generator = torch.Generator().manual_seed(0)
    prompt = loaded.chat_ids("Write a function that returns the sum of a list of numbers.")
    feedback = loaded.chat_ids("It failed: sum_list([1, 2]) returned 2, expected 3. " * 4)
    vocab = loaded.model.config.vocab_size
    results = []
    for rows in args.rows:
        ids = torch.randint(vocab, (rows, tokens), generator=generator)
        attempts = ids.tolist()
        batch = DistillBatch(
            student_contexts=[prompt] * rows,
            teacher_contexts=[prompt + feedback] * rows,
            attempts=attempts,
            sampler_logprobs=[[-5.0] * tokens] * rows,
        )
        best_teacher = best_train = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            teacher = teacher_hidden(adapter, batch)
            scored = time.perf_counter()
            distill(adapter, optimizer, batch, teacher, params)
            best_teacher = min(best_teacher, scored - started)
            best_train = min(best_train, time.perf_counter() - scored)
        results.append({"rows": rows, "teacher_s": round(best_teacher, 3),
                        "train_s": round(best_train, 3)})  # fmt: skip
    base = results[0]
    base_per_row = (base["teacher_s"] + base["train_s"]) / base["rows"]
    for r in results:
        per_row = (r["teacher_s"] + r["train_s"]) / r["rows"]
        r["cost_per_row_vs_first"] = round(per_row / base_per_row, 2)
    out = REPO / f"bench/results/update_rows-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "tokens_per_attempt": tokens,
              "num_iterations": params.num_iterations, "results": results}  # fmt: skip
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.model}: SDPO update of one adapter, {tokens} tokens per attempt, "
          f"{params.num_iterations} optimizer step(s), 1 thread")  # fmt: skip
    print(f"{'rows':>5}{'teacher s':>11}{'train s':>9}{'per row vs ' + str(base['rows']):>16}")
    for r in results:
        print(f"{r['rows']:>5}{r['teacher_s']:>11.3f}{r['train_s']:>9.3f}"
              f"{r['cost_per_row_vs_first']:>16.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
