"""The `sdpo` command line. Commands stay thin: they parse arguments and call importable code.

Worker-side commands import torch lazily, so the gateway's install (no torch) can still run
the client commands.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from . import __version__

app = typer.Typer(
    help="sdpo-serve: test-time self-distillation as a service.", no_args_is_help=True
)
bench_app = typer.Typer(help="Benchmarks (they print ratios and write JSON + PNG).")
testbed_app = typer.Typer(help="The bundled CPU model's task family and hard set.")
app.add_typer(bench_app, name="bench")
app.add_typer(testbed_app, name="testbed")

STRATEGY_HELP = "Comma-separated strategies: sdpo, best_of_k, multi_turn."


@app.callback()
def main() -> None:
    """sdpo-serve: test-time self-distillation as a service."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


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
    model: Annotated[Path | None, typer.Option(help="Model folder (default: bundled).")] = None,
) -> None:
    """Discovery@k of every strategy on the same hard problems, seeds and budget."""
    from worker.benchmarks.discovery import DiscoveryConfig, run_discovery

    if engine not in ("hf", "vllm"):
        raise typer.BadParameter("must be hf or vllm", param_hint="--engine")
    if control not in (None, "reference-teacher"):
        raise typer.BadParameter("the only control is reference-teacher", param_hint="--control")
    config = DiscoveryConfig(
        out=out,
        engine=engine,  # type: ignore[arg-type]
        strategies=tuple(s.strip() for s in strategies.split(",") if s.strip()),
        budget=budget,
        problems=problems,
        seeds=seeds,
        problem_seed=problem_seed,
        control=control,
        params=json.loads(params) if params else {},
        model=model,
    )
    report = asyncio.run(run_discovery(config))
    _print_discovery(report)


def _print_discovery(report: dict) -> None:
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
    for key in ("attempts_ratio_vs_best_of_k", "wall_ratio_vs_best_of_k"):
        if key in report:
            console.print(f"{key}: {report[key]}")


@testbed_app.command("hardset")
def testbed_hardset(
    samples: Annotated[int, typer.Option(help="Base-model samples per problem.")] = 512,
    min_rate: Annotated[float, typer.Option(help="Lowest base pass rate kept.")] = 0.003,
    max_rate: Annotated[float, typer.Option(help="Highest base pass rate kept.")] = 0.02,
    scan: Annotated[int, typer.Option(help="Held-out problems scanned.")] = 300,
    count: Annotated[int, typer.Option(help="Stop after this many hard problems.")] = 40,
) -> None:
    """Select the hard held-out set by the fixed rule and store it with the package."""
    from worker.runtime import build_runtime
    from worker.testbed.hardset import HardSetRule, save_hard_set, select_hard_set

    rule = HardSetRule(
        samples=samples, min_rate=min_rate, max_rate=max_rate, scan=scan, count=count
    )
    data = asyncio.run(select_hard_set(build_runtime("hf"), rule))
    save_hard_set(data)
    typer.echo(f"{len(data['problems'])} hard problems of {len(data['scanned'])} scanned")


if __name__ == "__main__":
    app()
