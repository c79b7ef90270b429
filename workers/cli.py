"""The `pagemill` command line: migrate, ingest, worker, extract, results, demo."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import threading
from dataclasses import asdict
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from pipeline.errors import PipelineError
from pipeline.settings import Settings, SettingsError, get_settings

app = typer.Typer(
    help="pagemill: bucket events in, validated invoice rows and per-call cost in Postgres out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        _die(str(exc))


def _user_schemas(settings: Settings) -> None:
    from pipeline.routing import configure_schemas

    configure_schemas(settings.user_schemas, settings.schema_routes, settings.schema_name)


def _die(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Third-party clients log request bodies and headers at DEBUG; keep them out of INFO logs.
    for noisy in ("botocore", "boto3", "urllib3", "httpx", "anthropic", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Create or upgrade the Postgres schema (run before starting workers)."""
    from pipeline.db.migrate import upgrade

    settings = _settings()
    try:
        upgrade(settings.database_url, revision)
    except Exception as exc:  # noqa: BLE001 — one clear line for any driver/alembic error
        _die(f"migration failed: {' '.join(str(exc).split())[:300]}")
    typer.echo(f"database at revision {revision}")


@app.command()
def extract(
    file: Annotated[Path, typer.Argument(help="A PDF, PNG, JPEG or TIFF file.")],
    schema: Annotated[str, typer.Option(help="Schema name.")] = "invoice",
    provider: Annotated[
        str | None, typer.Option(help="Extractor: local, anthropic, openai_compat.")
    ] = None,
) -> None:
    """Extract one file in-process (no broker, no database) and print the result as JSON."""
    from pipeline.costing import load_price_table
    from pipeline.extractors import build_extractor
    from pipeline.schemas import get_schema
    from pipeline.usecases.extract_file import extract_bytes, read_input

    settings = _settings()
    try:
        _user_schemas(settings)
        spec = get_schema(schema)
        extractor = build_extractor(settings, provider)
        data = read_input(file, settings.max_file_bytes)
        result, meter = extract_bytes(
            data, extractor, spec, load_price_table(settings.price_table), settings
        )
    except PipelineError as exc:
        _die(f"{file}: {exc}")
    output = {
        "file": str(file),
        "schema": spec.name,
        "schema_version": spec.version,
        "provider": result.provider,
        "model": result.model,
        "status": "needs_review" if result.needs_review else "done",
        "data": result.data,
        "review_reasons": result.review_reasons,
        "grounding": result.grounding,
        "cost_usd": str(meter.cost_usd),
        "calls": len(meter.calls),
        "input_tokens": sum(c.usage.total_input_tokens for c in meter.calls),
        "output_tokens": sum(c.usage.output_tokens for c in meter.calls),
    }
    typer.echo(json.dumps(output, indent=2, ensure_ascii=False))


@app.command()
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

    settings = _settings()
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with make_session_factory(engine)() as session:
            rows = repo.list_results(session, limit=limit, status=status, bucket=bucket)
    except Exception as exc:  # noqa: BLE001 — one clear line for a connection or schema error
        _die(f"cannot read results: {' '.join(str(exc).split())[:300]}")
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
            "cost_usd": str(r.cost_usd),
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
            f"{Decimal(row['cost_usd']):.6f}",
            row["error"],
        )
    console = Console(width=max(160, Console().width))
    console.print(table)
    console.print(f"{len(records)} document(s), total cost ${total:.6f}")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Processes (or threads).")] = None,
    pool: Annotated[str | None, typer.Option(help="Celery pool: prefork or threads.")] = None,
    queues_: Annotated[
        str | None,
        typer.Option(
            "--queues",
            help="Comma-separated: prepare (CPU: render, OCR), extract (model calls), "
            "maintenance. Default: all.",
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    with_beat: Annotated[
        bool, typer.Option("--beat", help="Also run the periodic sweep (one worker only).")
    ] = False,
) -> None:
    """Run the workers that process documents. Bare, it runs one worker per stage, each on the
    pool that fits it: prepare on prefork (PAGEMILL_PREPARE_CONCURRENCY, default one process per
    core) and extract on threads (PAGEMILL_EXTRACT_CONCURRENCY calls in flight, default 64).
    With --queues, --pool or --concurrency it runs one Celery worker as told (default: all
    queues, prefork, PAGEMILL_WORKER_CONCURRENCY)."""
    from workers import queues

    settings = _settings()
    if queues_ is None and pool is None and concurrency is None:
        from workers import launcher

        stages = launcher.plan(
            settings.prepare_concurrency or os.cpu_count() or 1, settings.extract_concurrency
        )
        raise typer.Exit(launcher.run(stages, loglevel=loglevel, beat=with_beat))

    size = concurrency or settings.worker_concurrency
    # What the worker runs at once sizes its broker and database connection pools: make the
    # flag the setting for this process and the pool processes it forks.
    os.environ["PAGEMILL_WORKER_CONCURRENCY"] = str(size)
    get_settings.cache_clear()
    from workers.app import app as celery_app
    from workers.app import size_broker_pool
    from workers.beat import SCHEDULER

    size_broker_pool(celery_app, size)  # the app may have been built before the line above
    code: object = celery_app.start(
        [
            "worker",
            f"--concurrency={size}",
            f"--pool={pool or 'prefork'}",
            f"--loglevel={loglevel}",
            f"--queues={queues_ or ','.join(queues.CONSUMED)}",
            "--without-gossip",
            "--without-mingle",
            # The schedule lives in memory (workers/beat.py): no state file is written.
            *(["--beat", f"--scheduler={SCHEDULER}"] if with_beat else []),
        ]
    )
    # Celery's exit code, passed on: a worker that stopped on an unrecoverable error (a broker
    # connection it could not restore) must not exit 0, or a supervisor with restart-on-failure
    # would leave it down. (app.worker_main drops the code: the process always exited 0.)
    raise typer.Exit(_worker_exit_code(code))


@app.command()
def ingest(
    webhook: Annotated[
        bool, typer.Option(help="Serve the webhook that S3-compatible servers post events to.")
    ] = False,
    queue_url: Annotated[
        str | None, typer.Option(help="SQS queue with bucket notifications.")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Turn bucket events into documents and enqueue them (SQS queue or webhook)."""
    from pipeline.db.session import make_engine, make_session_factory
    from pipeline.domain import ObjectRef
    from pipeline.routing import configure_schemas
    from pipeline.storage import make_s3_client, make_sqs_client
    from pipeline.usecases.ingest import ingest_event_object
    from workers import intake
    from workers.tasks.documents import nudge

    _logging(verbose)
    settings = _settings()
    sessions = make_session_factory(make_engine(settings.database_url, pool_size=2))
    try:
        routes = configure_schemas(
            settings.user_schemas, settings.schema_routes, settings.schema_name
        )
    except PipelineError as exc:
        _die(str(exc))
    s3 = make_s3_client(settings)

    def owe_nudge(document_id: int) -> None:
        # A broker that is down does not lose the document: Postgres owes it a nudge.
        nudge(document_id, sessions=sessions)

    def handle(ref: ObjectRef) -> None:
        ingest_event_object(
            sessions,
            s3,
            ref,
            routes=routes,
            default_schema=settings.schema_name,
            provider=settings.default_provider,
            read_metadata=settings.schema_from_metadata,
            enqueue=owe_nudge,
        )

    stop = threading.Event()
    if webhook:
        secret = settings.webhook_secret
        if secret is None:
            _die("set PAGEMILL_WEBHOOK_SECRET: the webhook only accepts signed requests")
        server = intake.make_webhook_server(
            settings.webhook_host,
            settings.webhook_port,
            secret.get_secret_value(),
            handle,
        )
        host, port = server.server_address[:2]
        typer.echo(f"webhook listening on http://{host!s}:{port}/events", err=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.shutdown()
        return
    url = queue_url or settings.sqs_queue_url
    if url is None:
        _die("no queue: pass --queue-url or set PAGEMILL_SQS_QUEUE_URL (or use --webhook)")
    try:
        intake.consume_sqs(
            make_sqs_client(settings),
            url,
            handle,
            wait_seconds=settings.sqs_wait_seconds,
            stop=stop,
        )
    except KeyboardInterrupt:
        stop.set()


@app.command("eval")
def evaluate_dir(
    directory: Annotated[
        Path, typer.Argument(help="A folder with docs/ and gt/ (samples layout).")
    ],
    provider: Annotated[str | None, typer.Option(help="Extractor to evaluate.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the full report as JSON here.")] = None,
    schema: Annotated[str, typer.Option(help="Schema name.")] = "invoice",
) -> None:
    """Score extraction against ground truth, per field and per document kind."""
    import time

    from pipeline.costing import load_price_table
    from pipeline.evaluation import evaluate, format_report, load_cases
    from pipeline.extractors import build_extractor
    from pipeline.schemas import get_schema
    from pipeline.usecases.extract_file import extract_bytes, read_input

    settings = _settings()
    try:
        _user_schemas(settings)
        cases = load_cases(directory)
        spec = get_schema(schema)
        extractor = build_extractor(settings, provider)
    except (OSError, PipelineError) as exc:
        _die(str(exc))
    prices = load_price_table(settings.price_table)

    def run(path: Path) -> tuple[dict[str, Any], Decimal, float]:
        started = time.perf_counter()
        result, meter = extract_bytes(
            read_input(path, settings.max_file_bytes), extractor, spec, prices, settings
        )
        return result.data or {}, meter.cost_usd, time.perf_counter() - started

    from rich.progress import track

    report = evaluate(track(cases, description="evaluating", transient=True), run)
    typer.echo(format_report(report))
    if out is not None:
        out.write_text(json.dumps(report.to_dict(), indent=2, default=str, ensure_ascii=False))
        typer.echo(f"report written to {out}")


@app.command()
def review(
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.TABLE,
    limit: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """Documents whose values broke a business rule or were not found on the page."""
    from sqlalchemy import select

    from pipeline.db.models import Document, Extraction

    with _sessions(_settings())() as session:
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


def _sessions(settings: Settings) -> Any:
    from pipeline.db.session import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.database_url, pool_size=1))


dlq = typer.Typer(help="Dead letters: documents that failed for good, kept for replay.")
app.add_typer(dlq, name="dlq")


@dlq.command("list")
def dlq_list(
    category: Annotated[str | None, typer.Option(help="Only this error category.")] = None,
    all_letters: Annotated[
        bool, typer.Option("--all", help="Include letters already replayed.")
    ] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.TABLE,
) -> None:
    """List dead letters."""
    from pipeline.usecases.dead_letters import list_letters

    with _sessions(_settings())() as session:
        letters = list_letters(session, category=category, include_replayed=all_letters)
    if output_format is OutputFormat.JSON:
        typer.echo(json.dumps([asdict(x) for x in letters], default=str, indent=2))
        return
    if not letters:
        typer.echo("no dead letters")
        return
    for x in letters:
        replayed = f" replayed {x.replay_count}x" if x.replayed_at else ""
        typer.echo(
            f"{x.id:>5}  doc {x.document_id:<6} {x.category:<22} {x.bucket}/{x.key}  "
            f"{x.message}{replayed}"
        )


@dlq.command("show")
def dlq_show(letter_id: Annotated[int, typer.Argument(help="Dead letter id.")]) -> None:
    """Show one dead letter with its document, failure history and provider calls."""
    from pipeline.usecases.dead_letters import show_letter

    with _sessions(_settings())() as session:
        detail = show_letter(session, letter_id)
    if detail is None:
        _die(f"no dead letter {letter_id}")
    typer.echo(json.dumps(detail, default=str, indent=2, ensure_ascii=False))


@dlq.command("replay")
def dlq_replay(
    letter_id: Annotated[int | None, typer.Argument(help="Dead letter id.")] = None,
    all_letters: Annotated[bool, typer.Option("--all", help="Replay every open letter.")] = False,
    category: Annotated[str | None, typer.Option(help="With --all: only this category.")] = None,
) -> None:
    """Send dead-lettered documents back through the pipeline (each letter replays once)."""
    from pipeline.db.session import transaction
    from pipeline.usecases.dead_letters import open_letter_ids, replay
    from workers.tasks.documents import enqueue_document

    if (letter_id is None) == (not all_letters):
        _die("give a dead letter id or --all")
    sessions = _sessions(_settings())
    with sessions() as session:
        ids = open_letter_ids(session, category) if all_letters else [letter_id]
    replayed = 0
    for one in ids:
        assert one is not None
        with transaction(sessions) as session:
            document_id = replay(session, one)
        if document_id is None:
            typer.echo(f"dead letter {one}: already replayed or unknown", err=True)
            continue
        enqueue_document(document_id)
        replayed += 1
        typer.echo(f"dead letter {one}: document {document_id} re-enqueued")
    typer.echo(f"{replayed} replayed")


@dlq.command("purge")
def dlq_purge(
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
    replayed_only: Annotated[bool, typer.Option(help="Only letters already replayed.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete dead letters (documents stay failed, with their error)."""
    from pipeline.db.session import transaction
    from pipeline.usecases.dead_letters import purge

    if not yes:
        typer.confirm("delete these dead letters?", abort=True)
    with transaction(_sessions(_settings())) as session:
        count = purge(session, category=category, replayed_only=replayed_only)
    typer.echo(f"{count} dead letter(s) deleted")


@app.command("sweep")
def sweep_once(
    stuck_after: Annotated[
        int | None, typer.Option(help="Seconds pending before a document counts as stuck.")
    ] = None,
) -> None:
    """Re-enqueue stuck documents once (the beat schedule runs this every minute)."""
    from datetime import timedelta

    from pipeline.usecases.recovery import sweep
    from workers.tasks.documents import enqueue_document

    settings = _settings()
    ids = sweep(
        _sessions(settings),
        stuck_after=timedelta(seconds=stuck_after or settings.stuck_after_s),
        enqueue=enqueue_document,
    )
    typer.echo(f"{len(ids)} document(s) re-enqueued")


@app.command("retention")
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

    settings = _settings()
    keep = settings.payload_retention_days if days is None else days
    count = delete_expired_payloads(_sessions(settings), timedelta(days=keep))
    typer.echo(f"page images of {count} document(s) deleted")


@app.command("reconcile")
def reconcile_once(
    bucket: Annotated[str, typer.Argument(help="Bucket to list.")],
    prefix: Annotated[str, typer.Option(help="Only keys under this prefix.")] = "",
) -> None:
    """Ingest objects in BUCKET for which no bucket event ever arrived."""
    from pipeline.storage import make_s3_client
    from pipeline.usecases.recovery import reconcile
    from workers.tasks.documents import enqueue_document

    settings = _settings()
    try:
        ids = reconcile(
            _sessions(settings),
            make_s3_client(settings),
            bucket,
            prefix=prefix,
            schema_name=settings.schema_name,
            provider=settings.default_provider,
            enqueue=enqueue_document,
        )
    except PipelineError as exc:
        _die(str(exc))
    typer.echo(f"{len(ids)} object(s) without an event ingested")


@app.command()
def beat(loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO") -> None:
    """Run the scheduler for the periodic sweep and reconciliation (run exactly one)."""
    from workers.app import app as celery_app
    from workers.beat import SCHEDULER

    code: object = celery_app.start(["beat", f"--loglevel={loglevel}", f"--scheduler={SCHEDULER}"])
    raise typer.Exit(_worker_exit_code(code))


def _worker_exit_code(code: object) -> int:
    """Celery's exit code as an int: None is a clean stop (0), a code that is not a number is a
    failure (1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Leave the started services running.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for results.")] = 300,
) -> None:
    """Run the whole pipeline on generated demo documents and print the results table."""
    from workers.demo import run_demo

    code = run_demo(_settings(), keep=keep, timeout_s=timeout)
    raise typer.Exit(code)


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
