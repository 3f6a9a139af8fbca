"""The `sdpo` command line. Commands stay thin: they parse arguments and call importable code.

Worker-side commands import torch lazily, so the gateway's install (no torch) can still run
the client commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from sdpo import __version__

from .cli_bench import bench_app, engine_errors
from .cli_problems import problems_app

app = typer.Typer(
    help="sdpo-serve: test-time self-distillation as a service.", no_args_is_help=True
)
testbed_app = typer.Typer(help="The bundled CPU model's task family.")
app.add_typer(bench_app, name="bench")
app.add_typer(testbed_app, name="testbed")
app.add_typer(problems_app, name="problems")

STRATEGY_HELP = "Comma-separated strategies: sdpo, best_of_k, multi_turn."


@app.callback()
def main() -> None:
    """sdpo-serve: test-time self-distillation as a service."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The built-in models: installed or not, how to install them, and their profiles. Any
    local Hugging Face folder works as --model / SDPO_MODEL too."""
    from worker.catalogue import describe

    rows = describe(_service_settings().model_cache)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="model catalogue (--model / SDPO_MODEL)")
    for column in ("name", "installed", "profile", "description"):
        table.add_column(column)
    for row in rows:
        installed = "yes" if row["installed"] else f"no: {row['install']}"
        if row["converted"] is False:
            installed += " (converted on first use, about 30 s)"
        profile = ", ".join(
            f"{k}={v}" for k, v in row["profile"].items() if v not in (None, {}, [])
        )
        table.add_row(row["name"], installed, profile, row["description"])
    Console().print(table)


@testbed_app.command("diagnose")
def testbed_diagnose(
    model: Annotated[Path | None, typer.Option(help="Model folder (default: bundled).")] = None,
    tasks: Annotated[int, typer.Option(help="Held-out tasks for the per-op lift.")] = 300,
) -> None:
    """The model's self-teacher, measured without a benchmark: teacher lift, pass rates with
    and without feedback, and which hidden constants it reads off the feedback."""
    from rich.console import Console
    from rich.table import Table

    from testbed.diagnostics import constant_lift, evaluate
    from testbed.tasks import heldout_task
    from worker.model import load_model

    loaded = load_model(model)
    typer.echo(evaluate(loaded.model, loaded.tokenizer).summary())
    table = Table(title=f"p(true hidden constant), {tasks} held-out tasks, one wrong attempt each")
    for column in ("hidden op", "n", "student", "teacher", "lift"):
        table.add_column(column)
    for row in constant_lift(
        loaded.model, loaded.tokenizer, [heldout_task(i) for i in range(tasks)]
    ):
        table.add_row(
            row.kind,
            str(row.n),
            f"{row.student_p:.3f}",
            f"{row.teacher_p:.3f}",
            f"x{row.ratio:.2f}",
        )
    Console().print(table)


# -- the service: serve, worker, submit, status, compare ----------------------------------------
API_URL = Annotated[
    str, typer.Option("--api-url", envvar="SDPO_API_URL", help="The gateway's base URL.")
]
API_KEY = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="SDPO_API_KEY", help="Bearer API key, if the server has keys."
    ),
]


def _service_settings(**overrides: object):
    """Settings from SDPO_* variables, with the options given on the command line on top."""
    from pydantic import ValidationError

    from sdpo.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        for e in error.errors():
            typer.echo(f"error: {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [SDPO_HOST; 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Gateway port [SDPO_PORT; 8000].")] = None,
    workers: Annotated[
        int, typer.Option(envvar="SDPO_WORKERS", help="Worker processes.", min=0)
    ] = 1,
    redis_url: Annotated[
        str | None, typer.Option(help="External Redis [SDPO_REDIS_URL]; default: embedded.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Embedded Redis data and checkpoints [SDPO_DATA_DIR].")
    ] = None,
) -> None:
    """Start Redis (embedded unless --redis-url), the gateway and N workers; Ctrl-C stops all."""
    import logging

    from .embedded import ServePlan
    from .embedded import serve as serve_all

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _service_settings(host=host, port=port, redis_url=redis_url, data_dir=data_dir)
    serve_all(ServePlan(settings, workers))


@app.command()
def worker(
    redis_url: Annotated[str | None, typer.Option(help="Redis [SDPO_REDIS_URL].")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Finds a local `sdpo serve`'s Redis [SDPO_DATA_DIR].")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Catalogue name or model folder [SDPO_MODEL; toy].")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto, float32, bfloat16 or float16 [SDPO_DTYPE].")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Torch device [SDPO_DEVICE].")] = None,
    engine: Annotated[
        str | None, typer.Option(help="Generation engine, hf or vllm [SDPO_ENGINE; hf].")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Consumer name [SDPO_WORKER_NAME].")] = None,
) -> None:
    """Join the job group and run sessions one at a time; Ctrl-C hands the current one back."""
    import logging

    from .embedded import discover_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _service_settings(
        redis_url=redis_url,
        data_dir=data_dir,
        model=model,
        dtype=dtype,
        device=device,
        engine=engine,
        worker_name=name,
    )
    if settings.redis_url is None:
        found = discover_url(settings.data_dir / "redis")
        if found is None:
            typer.echo("error: no --redis-url, and no `sdpo serve` running here", err=True)
            raise typer.Exit(2)
        settings = settings.model_copy(update={"redis_url": found})
    from worker.service_worker import run_worker

    with engine_errors():
        run_worker(settings)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint=str(path)) from None


def _client_call(call):
    """Run a client call; API errors and an unreachable server end the command cleanly."""
    import httpx

    from sdpo.client import ApiError

    try:
        return call()
    except ApiError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except httpx.TransportError as error:
        typer.echo(f"error: cannot reach the gateway ({error}); is `sdpo serve` running?", err=True)
        raise typer.Exit(1) from None


def _follow(client, problem_id: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("attempts"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns) as progress:
        task = progress.add_task("queued", total=total)

        def update(problem) -> None:
            progress.update(task, completed=problem.attempts_used, description=problem.status)

        return client.wait(problem_id, update)


def _print_problem(problem) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"problem {problem.id}", show_header=False)
    rows = {
        "status": problem.status + (f" ({problem.error})" if problem.error else ""),
        "strategy": problem.strategy,
        "attempts": f"{problem.attempts_used} / {problem.budget.max_attempts}",
        "first success": str(problem.first_success_attempt or "-"),
        "seconds to it": f"{problem.first_success_s:.1f}" if problem.first_success_s else "-",
        "steps": str(len(problem.steps)),
    }
    if problem.steps and problem.steps[-1].metrics:
        rows["last step"] = ", ".join(f"{k}={v:.4g}" for k, v in problem.steps[-1].metrics.items())
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)
    if problem.solution is not None:
        console.print("solution:")
        console.print(problem.solution.code or problem.solution.text, markup=False)


@app.command()
def submit(
    problem: Annotated[Path, typer.Argument(help="JSON body: prompt, verifier, budget, ...")],
    strategy: Annotated[
        str | None, typer.Option(help="sdpo, best_of_k or multi_turn (overrides the file).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the session with a progress bar.")] = False,
    api_url: API_URL = "http://127.0.0.1:8000",
    api_key: API_KEY = None,
) -> None:
    """Submit a problem. With --wait, exit status 0 only if it was solved."""
    from sdpo.client import SdpoClient

    body = _read_json(problem)
    if strategy is not None:
        body["strategy"] = strategy
    with SdpoClient(api_url, api_key) as client:
        created = _client_call(lambda: client.create_problem(body))
        typer.echo(created.id)
        if not wait:
            return
        final = _client_call(lambda: _follow(client, created.id, created.budget.max_attempts))
    _print_problem(final)
    raise typer.Exit(0 if final.status == "solved" else 1)


@app.command()
def status(
    problem_id: Annotated[str, typer.Argument(help="The id that submit printed.")],
    api_url: API_URL = "http://127.0.0.1:8000",
    api_key: API_KEY = None,
) -> None:
    """Show a session: status, attempts, first success, solution."""
    from sdpo.client import SdpoClient

    with SdpoClient(api_url, api_key) as client:
        _print_problem(_client_call(lambda: client.get_problem(problem_id)))


def _print_compare(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"comparison {result.id} ({result.status}), budget "
                  f"{result.budget.max_attempts} attempts, seed {result.seed}")  # fmt: skip
    for column in ("strategy", "solved", "attempts to 1st pass", "seconds to 1st pass", "runs"):
        table.add_column(column)
    for s in result.strategies:
        mean_k, mean_s = s.mean_attempts_to_success, s.mean_seconds_to_success
        table.add_row(
            s.strategy,
            f"{s.solved_rate:.0%}",
            f"{mean_k:.1f}" if mean_k is not None else "-",
            f"{mean_s:.1f}" if mean_s is not None else "-",
            ", ".join(f"{r.status}@{r.attempts_used}" for r in s.runs),
        )
    Console().print(table)


@app.command()
def compare(
    problem: Annotated[Path, typer.Argument(help="JSON body: prompt, verifier, budget, ...")],
    strategies: Annotated[str, typer.Option(help=STRATEGY_HELP)] = "sdpo,best_of_k",
    repeats: Annotated[int, typer.Option(help="Runs per strategy (seeds seed..).", min=1)] = 1,
    wait: Annotated[bool, typer.Option(help="Wait for all runs and print the table.")] = True,
    api_url: API_URL = "http://127.0.0.1:8000",
    api_key: API_KEY = None,
) -> None:
    """Run strategies side by side on one problem with the same budget and seeds."""
    from sdpo.client import SdpoClient

    body = _read_json(problem)
    body.pop("strategy", None)
    body["strategies"] = [s.strip() for s in strategies.split(",") if s.strip()]
    body["repeats"] = repeats
    with SdpoClient(api_url, api_key) as client:
        result = _client_call(lambda: client.create_compare(body))
        typer.echo(result.id)
        compare_id = result.id
        while wait and result.status != "done":
            time.sleep(1.0)
            result = _client_call(lambda: client.get_compare(compare_id))
    _print_compare(result)


if __name__ == "__main__":
    app()
