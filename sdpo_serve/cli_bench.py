"""`sdpo bench`: hard sets and the discovery benchmark, for any model and problem set."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(help="Benchmarks (they print ratios and write JSON + PNG).")

STRATEGY_HELP = "Comma-separated strategies: sdpo, best_of_k, multi_turn."
MODEL_HELP = "Catalogue name or model folder (default: SDPO_MODEL, else toy)."
PROBLEM_SET_HELP = "`toy` (the bundled task family) or a problem-set file (sdpo problems import)."


@contextmanager
def engine_errors() -> Iterator[None]:
    """A model, engine or benchmark input that cannot be used (no vLLM, no CUDA, a missing
    model package, no chat template, a bad problem-set line, a stale hard set) ends the command
    with what to do."""
    from sdpo.problem_set import ProblemSetError
    from worker.engine import EngineUnavailable
    from worker.model import ModelNotFound, ModelUnavailable
    from worker.profiles import ProfileError

    try:
        yield
    except (EngineUnavailable, ModelNotFound, ModelUnavailable, ProfileError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except (ProblemSetError, FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


@bench_app.command("hardset")
def bench_hardset(
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "toy",
    problem_set: Annotated[str, typer.Option(help=PROBLEM_SET_HELP)] = "toy",
    samples: Annotated[int, typer.Option(help="Base-model samples per problem.", min=1)] = 512,
    min_rate: Annotated[float, typer.Option(help="Lowest base pass rate kept.")] = 0.003,
    max_rate: Annotated[float, typer.Option(help="Highest base pass rate kept.")] = 0.02,
    scan: Annotated[int, typer.Option(help="Problems looked at, in file order.", min=1)] = 600,
    count: Annotated[int, typer.Option(help="Stop after this many hard problems.", min=1)] = 40,
    batch: Annotated[int, typer.Option(help="Answers per generate call.", min=1)] = 64,
    max_new_tokens: Annotated[
        int, typer.Option(help="Answer length in tokens (0: the model profile's).", min=0)
    ] = 160,
    seed: Annotated[int, typer.Option(help="Seeds every problem's sampler.")] = 0,
    tags: Annotated[
        str, typer.Option(help="Comma-separated tags a problem needs to be screened.")
    ] = "hard-candidate",
    screen_samples: Annotated[
        int, typer.Option(help="Two-stage screen: stage-1 samples (0: one stage).", min=0)
    ] = 0,
    screen_min_passes: Annotated[
        int, typer.Option(help="Stage 1 drops problems with fewer passes.", min=0)
    ] = 0,
    screen_max_rate: Annotated[
        float, typer.Option(help="Stage 1 drops problems passing more often.")
    ] = 1.0,
    temperature: Annotated[
        float,
        typer.Option(help="Sampling temperature of the screen (the benchmark then uses it)."),
    ] = 1.0,
    jobs: Annotated[
        int | None, typer.Option(help="Processes (default: one per core on CPU).", min=1)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output file (default: bench/results/hardsets/MODEL--SET.json)."),
    ] = None,
) -> None:
    """Choose a hard set by a rule fixed before any evaluation: base pass rates at
    --temperature (default 1) in [min-rate, max-rate]. The defaults are the toy's rule."""
    from discovery.hardset import HardSetRule, default_hard_set_path, save_hard_set

    with engine_errors():
        rule = HardSetRule(
            samples=samples,
            min_rate=min_rate,
            max_rate=max_rate,
            scan=scan,
            count=count,
            batch=batch,
            max_new_tokens=max_new_tokens or None,
            seed=seed,
            tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
            screen_samples=screen_samples,
            screen_min_passes=screen_min_passes,
            screen_max_rate=screen_max_rate,
            temperature=temperature,
        )
        data = asyncio.run(_select(model, problem_set, rule, jobs))
    path = out or default_hard_set_path(model, problem_set)
    save_hard_set(data, path)
    early = ""
    if data["stopped_early"]:
        early = f" (stopped early: --scan {data['rule']['scan']} reproduces it)"
    typer.echo(
        f"{len(data['problems'])} hard problems of {len(data['scanned'])} screened{early} -> {path}"
    )


async def _select(model: str, problem_set: str, rule, jobs: int | None) -> dict:
    from rich.progress import Progress

    from discovery import pool
    from discovery.hardset import (
        candidates,
        in_band,
        model_digest,
        screen_here,
        screen_in_pool,
        select_hard_set,
    )
    from discovery.problems import load_source
    from discovery.run import model_folder
    from worker.runtime import build_runtime

    source = load_source(problem_set)
    digest = model_digest(model_folder(model))
    todo = candidates(source, rule)
    jobs = jobs or pool.default_jobs("hf")
    with Progress() as bar:
        task = bar.add_task(f"screening {source.name}", total=len(todo))

        async def reported(screened):
            kept = 0
            try:
                async for result in screened:
                    kept += in_band(result, rule)
                    bar.update(task, advance=1, description=f"{source.name}: {kept} hard")
                    mark = "  -> hard" if in_band(result, rule) else ""
                    mark = mark or ("" if result.stage == 2 else "  (dropped at stage 1)")
                    rate = f"{result.passed}/{result.samples} = {result.base_pass_rate:.4f}"
                    bar.console.print(f"{result.id}: {rate}{mark}")
                    yield result
            finally:
                await screened.aclose()  # a pool cancels its queued problems

        if jobs == 1:
            screened = screen_here(build_runtime("hf", model), source, rule)
            return await select_hard_set(reported(screened), source, rule, model, digest)
        with pool.open_pool(jobs, "hf", model, problem_set) as workers:
            screened = screen_in_pool(workers, source, rule)
            return await select_hard_set(reported(screened), source, rule, model, digest)


@bench_app.command("discovery")
def bench_discovery(
    out: Annotated[Path, typer.Option(help="Folder for discovery.json and discovery.png.")] = Path(
        "bench/results/discovery"
    ),
    engine: Annotated[str, typer.Option(help="Generation engine: hf or vllm.")] = "hf",
    strategies: Annotated[str, typer.Option(help=STRATEGY_HELP)] = "sdpo,best_of_k,multi_turn",
    budget: Annotated[int, typer.Option(help="Attempts per run (K).", min=1)] = 128,
    problems: Annotated[int, typer.Option(help="Hard problems to use.", min=1)] = 20,
    seeds: Annotated[int, typer.Option(help="Seeds per problem.", min=1)] = 10,
    problem_seed: Annotated[int, typer.Option(help="Picks the problems from the hard set.")] = 0,
    control: Annotated[
        str | None, typer.Option(help="Add a control run: reference-teacher.")
    ] = None,
    params: Annotated[
        str | None, typer.Option(help='Per-strategy params as JSON: {"sdpo": {...}}.')
    ] = None,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    problem_set: Annotated[str, typer.Option(help=PROBLEM_SET_HELP)] = "toy",
    hard_set: Annotated[
        Path | None,
        typer.Option(help="Hard-set file (default: where `sdpo bench hardset` writes)."),
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="Processes (default: one per core on CPU, 1 on GPU).", min=1)
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            help="Sessions at once in one process, sharing the model as a worker's sessions "
            "do: their generations batched together, their updates in turns or, with "
            "SDPO_WORKER_BATCH_UPDATE=true, in shared passes (implies --jobs 1).",
            min=1,
        ),
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Torch threads of a one-process run (--jobs 1 or --concurrency); default: "
            "torch's, one per core. Processes of --jobs > 1 use 1 each.",
            min=1,
        ),
    ] = None,
    report_only: Annotated[
        bool,
        typer.Option(
            help="Run nothing: report the whole problems that a stopped run of the same "
            "command left in OUT/runs.jsonl."
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            help="Keep the runs that a stopped run of the same command logged in "
            "OUT/runs.jsonl, and run only the others."
        ),
    ] = False,
) -> None:
    """Discovery@k of every strategy on the same hard problems, seeds and budget."""
    from discovery.run import DiscoveryConfig, run_discovery

    if engine not in ("hf", "vllm"):
        raise typer.BadParameter("must be hf or vllm", param_hint="--engine")
    if control not in (None, "reference-teacher"):
        raise typer.BadParameter("the only control is reference-teacher", param_hint="--control")
    try:
        per_strategy = json.loads(params) if params else {}
    except ValueError as error:
        raise typer.BadParameter(f"not JSON: {error}", param_hint="--params") from None
    config = DiscoveryConfig(
        out=out,
        engine=engine,  # type: ignore[arg-type]
        strategies=tuple(s.strip() for s in strategies.split(",") if s.strip()),
        budget=budget,
        problems=problems,
        seeds=seeds,
        problem_seed=problem_seed,
        control=control,
        params=per_strategy,
        model=model,
        problem_set=problem_set,
        hard_set=hard_set,
        jobs=jobs,
        concurrency=concurrency,
        threads=threads,
        report_only=report_only,
        resume=resume,
    )
    with engine_errors():
        report = asyncio.run(run_discovery(config))
    print_discovery(report)


def print_discovery(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    budget = report["config"]["budget"]
    table = Table(title=f"discovery@k (90% bootstrap interval), budget {budget}")
    marks = sorted({k for k in (1, 8, 16, 32, 64, budget) if k <= budget})
    for column in ["strategy", *[f"@{k}" for k in marks], "mean attempts", "wall s"]:
        table.add_column(column)
    for name, s in {**report["strategies"], **report["controls"]}.items():
        cells = [
            f"{s['discovery'][str(k)]:.2f} [{s['discovery_ci90']['lo'][str(k)]:.2f}, "
            f"{s['discovery_ci90']['hi'][str(k)]:.2f}]"
            for k in marks
        ]
        mean = s["mean_attempts_to_success"]
        table.add_row(name, *cells, f"{mean:.1f}" if mean else "-", f"{s['wall_s']:.0f}")
    console = Console()
    console.print(table)
    if report.get("stopped_early"):
        console.print(f"a stopped run: the {len(report['problems'])} problems with all their runs")
    for key in ("attempts_ratio_vs_best_of_k", "attempts_ratio_ci90", "wall_ratio_vs_best_of_k"):
        if key in report:
            console.print(f"{key}: {report[key]}")
