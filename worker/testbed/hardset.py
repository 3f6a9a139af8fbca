"""The hard held-out set: chosen by a rule fixed in code, before any evaluation.

Rule: scan held-out tasks in index order (never seen in training), keep those with two hidden
constants whose blind-guess space has at least `min_search_space` combinations, estimate each
one's base pass rate from `samples` answers of the bundled model at
temperature 1 (judged by the real sandbox), and keep the task when the rate lies in
[min_rate, max_rate]. The result is stored with the rule and the checkpoint's hash, so that a
retrained model cannot silently reuse another model's hard set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sandbox import parse_spec

from ..generation import SamplingConfig
from ..judging import Judge
from ..strategies import Problem, Runtime
from .tasks import heldout_task, prompt, reference_prompt, verifier_spec

HARDSET_FILE = Path(__file__).with_name("hardset.json")


@dataclass(frozen=True)
class HardSetRule:
    samples: int = 512
    min_rate: float = 0.003
    max_rate: float = 0.02
    min_search_space: int = 36  # skip tasks a blind guesser solves more often than 1 in 36
    scan: int = 600  # held-out tasks looked at
    count: int = 40  # stop once this many are found
    batch: int = 64
    max_new_tokens: int = 160
    seed: int = 0


def heldout_problem(index: int, *, with_reference: bool = False) -> Problem:
    """Held-out task `index` as the strategies take it; `with_reference` adds the prompt that
    the reference-teacher control shows its teacher instead of the feedback."""
    task = heldout_task(index)
    reference = reference_prompt(task) if with_reference else None
    return Problem(prompt(task), parse_spec(verifier_spec(task)), reference)


def model_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]


async def base_pass_rate(runtime: Runtime, index: int, rule: HardSetRule) -> float:
    """Fraction of `rule.samples` base-model answers to held-out task `index` that pass."""
    task = heldout_task(index)
    loaded = runtime.engine.loaded
    judge = Judge(runtime.sandbox, parse_spec(verifier_spec(task)))
    ids = loaded.chat_ids(prompt(task))
    config = SamplingConfig(loaded.stop_token_ids, max_new_tokens=rule.max_new_tokens)
    generator = torch.Generator().manual_seed(rule.seed * 1_000_003 + index)
    passed = 0
    for start in range(0, rule.samples, rule.batch):
        n = min(rule.batch, rule.samples - start)
        samples = runtime.engine.generate(ids, n, config, generator=generator)
        verdicts = await judge.judge([loaded.decode(s.token_ids) for s in samples])
        passed += sum(v.passed for v in verdicts)
    return passed / rule.samples


async def select_hard_set(
    runtime: Runtime, rule: HardSetRule, progress: Callable[[str], None] = print
) -> dict:
    """Apply the rule; returns what `save_hard_set` stores."""
    chosen, scanned = [], []
    for index in range(rule.scan):
        task = heldout_task(index)
        if len(task.hidden) != 2 or task.search_space < rule.min_search_space:
            continue
        rate = await base_pass_rate(runtime, index, rule)
        scanned.append({"index": index, "base_pass_rate": rate})
        keep = rule.min_rate <= rate <= rule.max_rate
        progress(f"held-out task {index}: base pass rate {rate:.4f}{'  -> hard' if keep else ''}")
        if keep:
            chosen.append({"index": index, "base_pass_rate": rate})
            if len(chosen) >= rule.count:
                break
    return {
        "rule": asdict(rule),
        "model_digest": model_digest(runtime.engine.loaded.path),
        "problems": chosen,
        "scanned": scanned,
    }


def save_hard_set(data: dict, path: Path = HARDSET_FILE) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_hard_set(path: Path = HARDSET_FILE) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no hard set at {path}: run `sdpo testbed hardset` first")
    return json.loads(path.read_text())
