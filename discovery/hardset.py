"""Hard sets: the problems of a source that a model rarely solves, chosen by a rule fixed in code.

Rule: scan the first `scan` problems of the source in order, skip those without every tag in
`tags`, estimate each one's base pass rate from `samples` answers at `temperature` (1 by
default; the discovery benchmark then samples every strategy at the same temperature), judged by
the real sandbox, and keep it when the rate lies in [min_rate, max_rate]; stop once `count`
are kept. Each problem's sampler is seeded from `seed` and its position, so a rerun draws the
same answers.

Two-stage screen (optional, for slow models): with `screen_samples` > 0, a problem first gets
that many answers, and only goes on to the full `samples` when it passed at least
`screen_min_passes` times and at most `screen_max_rate` of them. The stage-1 answers count
toward the final rate. A problem dropped at stage 1 is recorded with its stage-1 rate.

The result is stored with the rule, the model's digest and the source's digest: a hard set
chosen for another model or another version of the file is refused (`StaleHardSet`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

import testbed
from worker.generation import SamplingConfig
from worker.judging import Judge
from worker.strategies import Runtime

from . import pool
from .problems import TOY, ProblemSource

TOY_HARDSET_FILE = Path(testbed.__file__).with_name("toy_hardset.json")
BUNDLED_HARDSETS = Path(__file__).with_name("hardsets")  # screened once, shipped (README)


@dataclass(frozen=True)
class HardSetRule:
    samples: int = 512
    min_rate: float = 0.003
    max_rate: float = 0.02
    scan: int = 600  # problems looked at, in order
    count: int = 40  # stop once this many are found
    batch: int = 64
    max_new_tokens: int | None = 160  # None: the model profile's max_completion_length
    seed: int = 0
    tags: tuple[str, ...] = ("hard-candidate",)  # the toy's; () screens every problem
    screen_samples: int = 0  # two-stage screen; 0: one stage
    screen_min_passes: int = 0
    screen_max_rate: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.temperature <= 2:
            raise ValueError(f"temperature must be in (0, 2], got {self.temperature}")
        if not 0 <= self.min_rate <= self.max_rate <= 1:
            raise ValueError("need 0 <= min_rate <= max_rate <= 1")
        if self.samples < 1 or self.batch < 1 or self.scan < 1 or self.count < 1:
            raise ValueError("samples, batch, scan and count must be positive")
        if not 0 <= self.screen_samples < self.samples:
            raise ValueError("screen_samples must lie in [0, samples)")


class StaleHardSet(ValueError):
    """A stored hard set that was chosen for another model or another problem set."""


@dataclass
class Screened:
    index: int
    id: str
    passed: int
    samples: int
    stage: int  # 1: dropped by the screen; 2: fully sampled
    base_pass_rate: float = field(init=False)

    def __post_init__(self) -> None:
        self.base_pass_rate = round(self.passed / self.samples, 6)


def model_digest(folder: Path) -> str:
    """sha256 of the model's weight files (a retrained or re-quantised model differs)."""
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"no weight files in {folder}")
    for path in files:
        with path.open("rb") as weights:
            while chunk := weights.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass
class _Sampler:
    """Draws and judges one problem's answers from one seeded generator."""

    runtime: Runtime
    judge: Judge
    ids: list[int]
    config: SamplingConfig
    generator: torch.Generator
    batch: int

    async def passes(self, n: int) -> int:
        passed, engine = 0, self.runtime.engine
        for start in range(0, n, self.batch):
            k = min(self.batch, n - start)
            samples = engine.generate(self.ids, k, self.config, generator=self.generator)
            answers = [engine.loaded.decode(s.token_ids) for s in samples]
            passed += sum(v.passed for v in await self.judge.judge(answers))
        return passed


async def screen_problem(
    runtime: Runtime, source: ProblemSource, index: int, rule: HardSetRule
) -> Screened:
    """Base pass rate of problem `index`, by the rule's one- or two-stage screen."""
    problem = source.problem(index)
    loaded = runtime.engine.loaded
    max_new = rule.max_new_tokens or loaded.profile.max_completion_length
    sampler = _Sampler(
        runtime,
        Judge(runtime.sandbox, problem.verifier),
        loaded.chat_ids(problem.prompt),
        SamplingConfig(loaded.stop_token_ids, temperature=rule.temperature, max_new_tokens=max_new),
        torch.Generator().manual_seed(rule.seed * 1_000_003 + index),
        rule.batch,
    )
    entry_id = source.entries[index].id
    drawn, passed = 0, 0
    if rule.screen_samples:
        drawn = rule.screen_samples
        passed = await sampler.passes(drawn)
        if passed < rule.screen_min_passes or passed / drawn > rule.screen_max_rate:
            return Screened(index, entry_id, passed, drawn, stage=1)
    passed += await sampler.passes(rule.samples - drawn)
    return Screened(index, entry_id, passed, rule.samples, stage=2)


def candidates(source: ProblemSource, rule: HardSetRule) -> list[int]:
    """Positions the rule screens, in order."""
    total = min(rule.scan, len(source.entries))
    return [i for i in range(total) if set(rule.tags) <= set(source.entries[i].tags)]


async def screen_here(
    runtime: Runtime, source: ProblemSource, rule: HardSetRule
) -> AsyncIterator[Screened]:
    """Screen the candidates one after another in this process."""
    for index in candidates(source, rule):
        yield await screen_problem(runtime, source, index, rule)


def _screen_in_worker(index: int, rule: HardSetRule) -> Screened:
    runtime, source = pool.state()
    return asyncio.run(screen_problem(runtime, source, index, rule))


async def screen_in_pool(
    workers: Executor, source: ProblemSource, rule: HardSetRule
) -> AsyncIterator[Screened]:
    """Screen the candidates in a benchmark pool (pool.py), yielding them in order; closing
    the iterator cancels the problems not yet started."""
    futures = [workers.submit(_screen_in_worker, i, rule) for i in candidates(source, rule)]
    try:
        for future in futures:
            yield await asyncio.wrap_future(future)
    finally:
        for future in futures:
            future.cancel()


def in_band(result: Screened, rule: HardSetRule) -> bool:
    return result.stage == 2 and rule.min_rate <= result.base_pass_rate <= rule.max_rate


async def select_hard_set(
    screened: AsyncIterator[Screened],
    source: ProblemSource,
    rule: HardSetRule,
    model: str,
    model_digest: str,
) -> dict:
    """Apply the rule to `screened` (results in candidate order, from screen_here or
    screen_in_pool); returns what `save_hard_set` stores.

    Cancelled (Ctrl-C), it keeps what it measured: the stored rule's `scan` becomes the
    problems actually screened, so `sdpo bench hardset --scan N` reproduces the set, and
    `stopped_early` says so."""
    chosen: list[Screened] = []
    scanned: list[Screened] = []
    stopped_early = False
    try:
        async for result in screened:
            scanned.append(result)
            if in_band(result, rule):
                chosen.append(result)
            if len(chosen) >= rule.count:
                break
    except asyncio.CancelledError:
        if not scanned:
            raise
        stopped_early = True
    finally:
        if hasattr(screened, "aclose"):
            await screened.aclose()  # a pool stops its queued problems
    if stopped_early:
        rule = replace(rule, scan=scanned[-1].index + 1)
    return {
        "rule": asdict(rule),
        "stopped_early": stopped_early,
        "model": model,
        "model_digest": model_digest,
        "problem_set": source.name,
        "problem_set_digest": source.digest,
        "problems": [_row(s) for s in chosen],
        "scanned": [_row(s) for s in scanned],
    }


def _row(s: Screened) -> dict:
    return {
        "index": s.index,
        "id": s.id,
        "base_pass_rate": s.base_pass_rate,
        "passed": s.passed,
        "samples": s.samples,
    }


def _slug(model: str, problem_set: str) -> str:
    return "--".join(Path(name).name.replace(".jsonl", "") for name in (model, problem_set))


def default_hard_set_path(model: str, problem_set: str) -> Path:
    """Where `sdpo bench hardset` writes by default: the bundled toy set for the toy pair,
    otherwise bench/results/hardsets/<model>--<problem set>.json."""
    if model == TOY and problem_set == TOY:
        return TOY_HARDSET_FILE
    return Path("bench/results/hardsets") / f"{_slug(model, problem_set)}.json"


def find_hard_set(model: str, problem_set: str) -> Path:
    """The hard set `sdpo bench discovery` uses by default: one screened here, else the one
    shipped in discovery/hardsets/ (its digests still have to match)."""
    screened = default_hard_set_path(model, problem_set)
    shipped = BUNDLED_HARDSETS / f"{_slug(model, problem_set)}.json"
    return screened if screened.is_file() or not shipped.is_file() else shipped


def save_hard_set(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_hard_set(
    path: Path = TOY_HARDSET_FILE,
    *,
    model_digest: str | None = None,
    problem_set_digest: str | None = None,
) -> dict:
    """A stored hard set; with digests given, raises StaleHardSet unless both match."""
    if not path.is_file():
        raise FileNotFoundError(f"no hard set at {path}: run `sdpo bench hardset` first")
    data = json.loads(path.read_text())
    for key, expected in (
        ("model_digest", model_digest),
        ("problem_set_digest", problem_set_digest),
    ):
        if expected is not None and data.get(key) != expected:
            what = "model" if key == "model_digest" else "problem set"
            raise StaleHardSet(
                f"{path} was chosen for another {what} ({key} {data.get(key)}, this one is "
                f"{expected}): run `sdpo bench hardset` again for this pair"
            )
    return data
