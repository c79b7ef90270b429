"""The `pagemill` command line: the app, with every command of this package registered in order."""

from __future__ import annotations

import sys

import typer

from pipeline.settings import SettingsError
from workers.cli import costs, dead_letters, documents, extraction, operations, processes

app = typer.Typer(
    help="pagemill: bucket events in, validated invoice rows and per-call cost in Postgres out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# `--help` lists the commands in the order they are registered, then the groups (review, dlq,
# budget): keep this order, or the help changes.
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
app.command("costs")(costs.costs)
app.add_typer(costs.budget_app, name="budget")
app.command("circuits")(costs.circuits)
app.command("batches")(costs.batches)


def main() -> None:  # pragma: no cover - console script entry
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
