"""The `sdpo` command line. Commands stay thin: they parse arguments and call importable code."""

from __future__ import annotations

import typer

from . import __version__

app = typer.Typer(
    help="sdpo-serve: test-time self-distillation as a service.", no_args_is_help=True
)


@app.callback()
def main() -> None:
    """sdpo-serve: test-time self-distillation as a service."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
