"""The `pagemill` command line: every command registered in the order `--help` lists it."""

from __future__ import annotations

import sys

import typer

from pipeline.settings import SettingsError
from workers.cli import dead_letters, documents, extraction, operations, processes

app = typer.Typer(
    help="pagemill: bucket events in, validated invoice rows and per-call cost in Postgres out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(processes.migrate)
app.command()(extraction.extract)
app.command()(documents.results)
app.command()(operations.status)
app.command()(processes.worker)
app.command()(processes.ingest)
app.command()(processes.web)
app.command("eval")(extraction.evaluate_dir)
app.add_typer(documents.review_app, name="review")
app.add_typer(dead_letters.dlq_app, name="dlq")
app.command("sweep")(operations.sweep_once)
app.command("retention")(operations.retention_once)
app.command("reconcile")(operations.reconcile_once)
app.command()(processes.beat)
app.command()(processes.demo)


def _register_cost_commands() -> None:
    from workers.cli_cost import register

    register(app)


_register_cost_commands()


def main() -> None:  # pragma: no cover - console script entry
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
