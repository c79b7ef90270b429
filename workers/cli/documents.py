"""Commands that show what became of documents: results, and the review queue with its export
as ground truth."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.money import usd
from workers.cli.shared import OutputFormat, die, session_factory, settings_or_exit


def results(
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = (
        OutputFormat.TABLE
    ),
    limit: Annotated[int, typer.Option(min=1, help="Most recent N documents.")] = 50,
    status: Annotated[str | None, typer.Option(help="Only documents in this status.")] = None,
    bucket: Annotated[str | None, typer.Option(help="Only documents from this bucket.")] = None,
) -> None:
    """List documents with status, extracted fields, error and cost."""
    from pipeline.db import repository as repo
    from pipeline.db.session import make_engine, make_session_factory

    settings = settings_or_exit()
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with make_session_factory(engine)() as session:
            rows = repo.list_results(session, limit=limit, status=status, bucket=bucket)
    except Exception as exc:  # noqa: BLE001 — one clear line for a connection or schema error
        die(f"cannot read results: {' '.join(str(exc).split())[:300]}")
    finally:
        engine.dispose()
    records = [
        {
            "document_id": r.document_id,
            "bucket": r.bucket,
            "key": r.key,
            "status": r.status,
            "data": r.data,
            "error": (
                {"category": r.error_category, "message": r.error_message}
                if r.error_category and r.status == "failed"
                else None
            ),
            "cost_usd": usd(r.cost_usd),
            "calls": r.calls,
            "unpriced_calls": r.unpriced_calls,
        }
        for r in rows
    ]
    if output_format is OutputFormat.JSON:
        typer.echo(json.dumps(records, indent=2, ensure_ascii=False))
    elif output_format is OutputFormat.CSV:
        typer.echo(_csv(records), nl=False)
    else:
        _print_table(records)


_TABLE_FIELDS = ("invoice_number", "invoice_date", "vendor_name", "total", "currency")


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    data = record["data"] or {}
    error = record["error"] or {}
    return {
        "id": record["document_id"],
        "key": record["key"],
        "status": record["status"],
        **{name: data.get(name) for name in _TABLE_FIELDS},
        "line_items": len(data.get("line_items") or []),
        "error": f"{error['category']}: {error['message']}" if error else "",
        "cost_usd": record["cost_usd"],
    }


def _csv(records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    flat = [_flat(r) for r in records]
    columns = list(flat[0]) if flat else ["id", "key", "status"]
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def _print_table(records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in ("id", "key", "status", *_TABLE_FIELDS, "items", "cost $", "error"):
        table.add_column(column, overflow="fold")
    total = Decimal(0)
    for record in records:
        row = _flat(record)
        total += Decimal(record["cost_usd"])
        style = {"done": "green", "failed": "red", "needs_review": "yellow"}.get(row["status"])
        table.add_row(
            str(row["id"]),
            row["key"],
            f"[{style}]{row['status']}[/]" if style else row["status"],
            *(str(row[name]) if row[name] is not None else "" for name in _TABLE_FIELDS),
            str(row["line_items"]),
            usd(row["cost_usd"], 6),
            row["error"],
        )
    console = Console(width=max(160, Console().width))
    console.print(table)
    console.print(f"{len(records)} document(s), total cost ${usd(total, 6)}")


review_app = typer.Typer(
    help="Documents whose values broke a business rule or were not found on the page; "
    "`review export DIR` writes reviewed documents as ground truth for `pagemill eval`.",
    invoke_without_command=True,
)


@review_app.callback()
def review(
    ctx: typer.Context,
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.TABLE,
    limit: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """Documents waiting for review (review them in `pagemill web`)."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlalchemy import select

    from pipeline.db.models import Document, Extraction

    with session_factory(settings_or_exit())() as session:
        rows = session.execute(
            select(Document.id, Document.bucket, Document.key, Extraction.review_reasons)
            .join(Extraction, Extraction.document_id == Document.id)
            .where(Document.status == "needs_review")
            .order_by(Document.id.desc())
            .limit(limit)
        ).all()
    records = [
        {"document_id": r.id, "bucket": r.bucket, "key": r.key, "reasons": r.review_reasons}
        for r in rows
    ]
    if output_format is OutputFormat.JSON:
        typer.echo(json.dumps(records, indent=2, ensure_ascii=False))
        return
    if not records:
        typer.echo("nothing to review")
        return
    for record in records:
        typer.echo(f"{record['document_id']:>6}  {record['bucket']}/{record['key']}")
        for reason in record["reasons"]:
            typer.echo(f"        - {reason}")


@review_app.command("export")
def review_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write docs/ and gt/ into.")],
    since: Annotated[
        str | None, typer.Option(help="Only documents reviewed since (ISO date or time).")
    ] = None,
) -> None:
    """Write reviewed documents (their file and the reviewed values) as ground truth in the
    layout `pagemill eval DIR` reads: DIR/docs/NAME and DIR/gt/NAME.json."""
    from datetime import UTC, datetime

    from pipeline.storage import make_s3_client
    from pipeline.usecases.review import export_ground_truth, reviewed_cases

    settings = settings_or_exit()
    start = None
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            die(f"--since {since!r} is not an ISO date or time")
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    with session_factory(settings)() as session:
        cases = reviewed_cases(session, since=start)

    def write(name: str, data: bytes) -> None:
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    result = export_ground_truth(
        cases, make_s3_client(settings), write, max_bytes=settings.max_file_bytes
    )
    for name, why in result.skipped.items():
        typer.echo(f"skipped {name}: {why}", err=True)
    typer.echo(f"{len(result.exported)} reviewed document(s) written to {directory}")
    if result.exported:
        typer.echo(f"score an extractor on them: pagemill eval {directory}")
