"""The `pagemill` command line: migrate, ingest, worker, extract, results, status, demo."""

from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from pipeline.errors import PipelineError
from pipeline.money import json_default, usd
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


def _logging(settings: Settings, level: int | str = logging.INFO) -> None:
    from pipeline import logs

    logs.configure(settings.log_format, level)


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
        "cost_usd": usd(meter.cost_usd),
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


@app.command()
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
        _die("status prints a table or json")
    settings = _settings()
    as_json = output_format is OutputFormat.JSON
    try:
        code = run(
            settings, _sessions(settings), once=once or as_json, as_json=as_json, interval=interval
        )
    except StatusUnavailable as exc:
        _die(f"cannot read the database: {exc}")
    raise typer.Exit(code)


def _celery_quiet(settings: Settings) -> list[str]:
    # Celery prints a banner to stdout at start; with JSON logs every line must be JSON.
    return ["--quiet"] if settings.log_format == "json" else []


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
        from workers import launcher, telemetry

        _logging(settings, loglevel.upper())
        stages = launcher.plan(
            settings.prepare_concurrency or os.cpu_count() or 1, settings.extract_concurrency
        )
        # One endpoint for both stage workers: they record into this process's directory
        # (inherited PROMETHEUS_MULTIPROC_DIR) and serve nothing themselves.
        telemetry.serve(settings, "worker")
        exit_code = launcher.run(
            stages, loglevel=loglevel, beat=with_beat, env={"PAGEMILL_METRICS_PORT": "0"}
        )
        raise typer.Exit(exit_code)

    if settings.log_format == "json":
        # Before Celery starts: it warns (running as root, …) before it configures logging.
        _logging(settings, loglevel.upper())
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
            *_celery_quiet(settings),
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
    settings = _settings()
    _logging(settings, logging.DEBUG if verbose else logging.INFO)
    if webhook:
        _serve(settings, settings.webhook_host, settings.webhook_port, dashboard=False)
        return
    from pipeline.db.session import make_engine, make_session_factory
    from pipeline.storage import make_s3_client, make_sqs_client
    from workers import intake, telemetry
    from workers.web.wiring import ingest_handle

    telemetry.serve(settings, "intake")
    sessions = make_session_factory(make_engine(settings.database_url, pool_size=2))
    try:
        handle = ingest_handle(settings, sessions, make_s3_client(settings))
    except PipelineError as exc:
        _die(str(exc))
    stop = threading.Event()
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


def _serve(settings: Settings, host: str, port: int, *, dashboard: bool) -> None:
    """Serve the ASGI app in the foreground until SIGINT/SIGTERM."""
    from workers.web.server import Served
    from workers.web.wiring import build_app

    try:
        web_app = build_app(
            settings, host, dashboard=dashboard, require_webhook_secret=not dashboard
        )
        served = Served(web_app, host, port)
    except PipelineError as exc:
        _die(exc.message)
    what = "dashboard" if dashboard else "webhook"
    path = "/" if dashboard else "/events"
    logging.getLogger("pagemill.web").info("%s listening on %s%s", what, served.url, path)
    served.serve_forever()


@app.command()
def web(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default PAGEMILL_WEB_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default PAGEMILL_WEB_PORT, 8080).")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Serve the dashboard, the bucket-event webhook, /healthz, /readyz and /metrics.
    Listens on 127.0.0.1:8080 by default; anywhere else it needs PAGEMILL_WEB_TOKEN."""
    settings = _settings()
    _logging(settings, logging.DEBUG if verbose else logging.INFO)
    _serve(
        settings,
        host or settings.web_host,
        settings.web_port if port is None else port,
        dashboard=True,
    )


@app.command("eval")
def evaluate_dir(
    directory: Annotated[
        Path, typer.Argument(help="A folder with docs/ and gt/ (samples layout).")
    ],
    provider: Annotated[str | None, typer.Option(help="Extractor to evaluate.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the full report as JSON here.")] = None,
    schema: Annotated[str, typer.Option(help="Schema name.")] = "invoice",
) -> None:
    """Score extraction against ground truth, per field, per document kind and per source."""
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

    readers: dict[Path, str] = {}  # e-invoices are read from their XML, whatever the provider

    def run(path: Path) -> tuple[dict[str, Any], Decimal, float]:
        started = time.perf_counter()
        result, meter = extract_bytes(
            read_input(path, settings.max_file_bytes), extractor, spec, prices, settings
        )
        readers[path] = result.provider
        return result.data or {}, meter.cost_usd, time.perf_counter() - started

    from rich.progress import track

    report = evaluate(
        track(cases, description="evaluating", transient=True), run, read_by=readers.get
    )
    typer.echo(format_report(report))
    if out is not None:
        out.write_text(json.dumps(report.to_dict(), indent=2, default=str, ensure_ascii=False))
        typer.echo(f"report written to {out}")


review_app = typer.Typer(
    help="Documents whose values broke a business rule or were not found on the page; "
    "`review export DIR` writes reviewed documents as ground truth for `pagemill eval`.",
    invoke_without_command=True,
)
app.add_typer(review_app, name="review")


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

    settings = _settings()
    start = None
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            _die(f"--since {since!r} is not an ISO date or time")
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    with _sessions(settings)() as session:
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
        typer.echo(json.dumps([asdict(x) for x in letters], default=json_default, indent=2))
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
    typer.echo(json.dumps(detail, default=json_default, indent=2, ensure_ascii=False))


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


def _exit_on_term(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


@app.command()
def beat(loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO") -> None:
    """Run the scheduler for the periodic sweep and reconciliation. A second beat waits on a
    lock in Redis until the first is gone, so they never schedule twice."""
    from workers.app import app as celery_app
    from workers.beat import SCHEDULER
    from workers.beatlock import hold_beat_lock

    settings = _settings()
    # Before the lock (its waits are logged) and before Celery's own first warnings.
    _logging(settings, loglevel.upper())
    held = hold_beat_lock(settings.broker_url)
    atexit.register(held.release)  # a clean stop hands over at once, not after the TTL
    # Until Celery installs its own handlers, make SIGTERM an exit that runs atexit.
    signal.signal(signal.SIGTERM, _exit_on_term)
    code: object = celery_app.start(
        [*_celery_quiet(settings), "beat", f"--loglevel={loglevel}", f"--scheduler={SCHEDULER}"]
    )
    raise typer.Exit(_worker_exit_code(code))


def _worker_exit_code(code: object) -> int:
    """Celery's exit code as an int: None is a clean stop (0), a code that is not a number is a
    failure (1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


@app.command()
def demo(
    keep: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            "--keep",
            help="Afterwards keep the pipeline running and serve the dashboard "
            "(PAGEMILL_WEB_PORT, default http://127.0.0.1:8080/) until Ctrl-C.",
        ),
    ] = False,
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
