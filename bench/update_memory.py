"""The SDPO update's peak memory and time on SmolLM2-135M-Instruct, by SDPO_UPDATE_TOKENS_PER_PASS.

    .venv/bin/python bench/update_memory.py                  # 1024 (the default) against 4096
    .venv/bin/python bench/update_memory.py --tokens 512 1024 4096 --threads 2

One update of 8 failed attempts of 256 tokens after a 179-token prompt (a HumanEval prompt's
length), each with a teacher context of 400 more tokens of feedback; random token ids, since
memory and time depend on the shapes, not the text. Each setting runs in a fresh process, one
after the other, which reports its resident-memory high-water mark (VmHWM, reset before the
update) and the teacher and training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[1]))
from sdpo.params import SDPOParams
from sdpo.settings import get_settings
from worker.adapter import SessionAdapter
from worker.catalogue import resolve_model
from worker.model import load_model
from worker.update import DistillBatch, distill, make_optimizer, teacher_hidden

def status(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024 / 1e9

loaded = load_model(resolve_model("smollm2-135m-instruct", get_settings().model_cache).folder)
g = torch.Generator().manual_seed(0)
ids = lambda n: torch.randint(100, 40000, (n,), generator=g).tolist()
prompt = ids(179)
attempts = [ids(256) for _ in range(8)]
batch = DistillBatch([prompt] * 8, [prompt + ids(400) for _ in range(8)], attempts,
                     [[-1.0] * 256] * 8)
params = SDPOParams(learning_rate=1e-4, num_iterations=1)
adapter = SessionAdapter(loaded.model, params, seed=0)
optimizer = make_optimizer(adapter, params)
Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
resident = status("VmRSS")
started = time.perf_counter()
teacher = teacher_hidden(adapter, batch)
scored = time.perf_counter()
metrics = distill(adapter, optimizer, batch, teacher, params)
print(json.dumps({"resident_gb": resident, "peak_gb": status("VmHWM"),
                  "teacher_s": scored - started, "train_s": time.perf_counter() - scored,
                  "passes": metrics["update_passes"], "loss": metrics["loss"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(f"one SDPO update, 8 attempts x 256 tokens, {args.threads} threads")
    print(f"{'tokens/pass':>12}{'passes':>8}{'peak GB':>9}{'growth GB':>11}{'teacher s':>11}"
          f"{'train s':>9}{'loss':>12}")  # fmt: skip
    for tokens in args.tokens:
        env = {**os.environ, "SDPO_UPDATE_TOKENS_PER_PASS": str(tokens), "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-c", CHILD, str(args.threads)]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{tokens:>12}{r['passes']:>8}{r['peak_gb']:>9.2f}"
              f"{r['peak_gb'] - r['resident_gb']:>11.2f}{r['teacher_s']:>11.1f}"
              f"{r['train_s']:>9.1f}{r['loss']:>12.4g}")  # fmt: skip


if __name__ == "__main__":
    main()
