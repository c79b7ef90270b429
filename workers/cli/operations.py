"""Commands that look after a running pipeline: the live status view, and one run by hand of
each periodic job (sweep, retention, reconcile)."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.errors import PipelineError
from workers.cli.shared import OutputFormat, die, session_factory, settings_or_exit


def status(
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json (json implies --once).")
    ] = OutputFormat.TABLE,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between refreshes.")] = 2.0,
) -> None:
    """The pipeline at a glance, live: queue depths, work in flight, pages/min, stage latency,
    cost today and dead letters. `--once --format json` prints one snapshot for scripts."""
    from workers.status import StatusUnavailable, run

    if output_format is OutputFormat.CSV:
        die("status prints a table or json")
    settings = settings_or_exit()
    as_json = output_format is OutputFormat.JSON
    try:
        code = run(
            settings,
            session_factory(settings),
            once=once or as_json,
            as_json=as_json,
            interval=interval,
        )
    except StatusUnavailable as exc:
        die(f"cannot read the database: {exc}")
    raise typer.Exit(code)


def sweep_once(
    stuck_after: Annotated[
        int | None, typer.Option(help="Seconds pending before a document counts as stuck.")
    ] = None,
) -> None:
    """Re-enqueue stuck documents once (the beat schedule runs this every minute)."""
    from datetime import timedelta

    from pipeline.usecases.recovery import sweep
    from workers.tasks.documents import enqueue_document

    settings = settings_or_exit()
    ids = sweep(
        session_factory(settings),
        stuck_after=timedelta(seconds=stuck_after or settings.stuck_after_s),
        enqueue=enqueue_document,
    )
    typer.echo(f"{len(ids)} document(s) re-enqueued")


def retention_once(
    days: Annotated[
        float | None,
        typer.Option(help="Keep page images this many days after a document is final."),
    ] = None,
) -> None:
    """Delete page images of documents final for longer than the retention (the beat does this
    every PAGEMILL_RETENTION_INTERVAL_S)."""
    from datetime import timedelta

    from pipeline.usecases.retention import delete_expired_payloads

    settings = settings_or_exit()
    keep = settings.payload_retention_days if days is None else days
    count = delete_expired_payloads(session_factory(settings), timedelta(days=keep))
    typer.echo(f"page images of {count} document(s) deleted")


def reconcile_once(
    bucket: Annotated[str, typer.Argument(help="Bucket to list.")],
    prefix: Annotated[str, typer.Option(help="Only keys under this prefix.")] = "",
) -> None:
    """Ingest objects in BUCKET for which no bucket event ever arrived."""
    from pipeline.storage import make_s3_client
    from pipeline.usecases.recovery import reconcile
    from workers.tasks.documents import enqueue_document

    settings = settings_or_exit()
    try:
        ids = reconcile(
            session_factory(settings),
            make_s3_client(settings),
            bucket,
            prefix=prefix,
            schema_name=settings.schema_name,
            provider=settings.default_provider,
            enqueue=enqueue_document,
        )
    except PipelineError as exc:
        die(str(exc))
    typer.echo(f"{len(ids)} object(s) without an event ingested")
