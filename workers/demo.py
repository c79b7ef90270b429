"""`pagemill demo`: generated invoices through the real path, from bucket upload to result rows."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from pipeline import storage
from pipeline.db.migrate import upgrade
from pipeline.db.models import Document
from pipeline.db.session import make_engine, make_session_factory
from pipeline.domain import DocumentStatus
from pipeline.errors import PermanentError
from pipeline.settings import Settings
from pipeline.synthetic import demo_documents
from workers import devstack

FINAL = [s.value for s in DocumentStatus if s.is_final]


def run_demo(settings: Settings, *, keep: bool = False, timeout_s: int = 300) -> int:
    console = Console(stderr=True)
    created = devstack.ensure_database(settings.database_url)
    if created:
        console.print("created the database")
    upgrade(settings.database_url)
    console.print("schema migrated")

    s3_server = None
    if settings.s3_endpoint_url is None:
        s3_server = devstack.start_s3_server()
        settings = settings.model_copy(
            update={
                "s3_endpoint_url": s3_server.endpoint_url,
                "s3_access_key_id": "test",
                "s3_secret_access_key": SecretStr("test"),
            }
        )
        console.print(f"started an S3 + SQS server (moto) at {s3_server.endpoint_url}")
    bucket = f"pagemill-demo-{int(time.time())}"
    s3 = storage.make_s3_client(settings)
    sqs = storage.make_sqs_client(settings)
    queue_url = storage.ensure_bucket_notifications(s3, sqs, bucket, f"{bucket}-events")
    console.print(f"bucket {bucket} notifies SQS queue {queue_url}")

    env = {
        "PAGEMILL_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "PAGEMILL_SQS_QUEUE_URL": queue_url,
        "PAGEMILL_SQS_WAIT_SECONDS": "1",
    }
    if s3_server is not None:
        env.update(devstack.DUMMY_CREDENTIALS)
    log_dir = Path(tempfile.mkdtemp(prefix="pagemill-demo-"))
    processes = [
        # The worker serves /metrics on PAGEMILL_METRICS_PORT; the intake would want the same.
        devstack.spawn("ingest", ["ingest"], {**env, "PAGEMILL_METRICS_PORT": "0"}, log_dir),
        devstack.spawn("worker", ["worker", "--concurrency", "2"], env, log_dir),
    ]
    engine = make_engine(settings.database_url, pool_size=1)
    sessions = make_session_factory(engine)
    documents = demo_documents()
    try:
        for key, body, _ in documents:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/pdf")
        console.print(f"uploaded {len(documents)} documents; provider: {settings.default_provider}")

        def finished() -> int:
            with sessions() as session:
                count = session.execute(
                    select(func.count())
                    .select_from(Document)
                    .where(Document.bucket == bucket, Document.status.in_(FINAL))
                ).scalar_one()
            return int(count)

        done = 0
        deadline = time.monotonic() + timeout_s
        with Progress(
            TextColumn("processing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("documents", total=len(documents))
            while time.monotonic() < deadline:
                done = finished()
                progress.update(task, completed=done)
                if done >= len(documents):
                    break
                dead = [p for p in processes if not p.alive()]
                if dead:
                    for p in dead:
                        console.print(f"[red]{p.name} exited[/]:\n{p.tail()}")
                    _stop(processes)
                    return 1
                time.sleep(0.5)
    except BaseException:
        _stop(processes)
        raise
    finally:
        engine.dispose()
    if not keep:
        _stop(processes)

    from workers.cli.documents import results
    from workers.cli.shared import OutputFormat

    results(output_format=OutputFormat.TABLE, limit=len(documents), status=None, bucket=bucket)
    if done < len(documents):
        console.print(f"[red]timed out: {done}/{len(documents)} documents final[/]")
        for process in processes:
            console.print(f"--- {process.name} log (last lines) ---\n{process.tail()}")
        _stop(processes)
        return 1
    console.print(f"logs in {log_dir}")
    console.print(
        "next: `pagemill dlq list` shows the corrupt file's dead letter; "
        "`pagemill results --format json` the data; SQL views invoice_results, invoice_line_items"
    )
    if keep:
        _keep_running(settings, processes, console)
    else:
        console.print(
            "run `make demo KEEP=1` (pagemill demo --keep-running) to keep the pipeline and "
            "its dashboard running afterwards"
        )
    if s3_server is not None:
        s3_server.stop()
    return 0


def _stop(processes: list[devstack.Process]) -> None:
    for process in processes:
        process.stop()


def _keep_running(settings: Settings, processes: list[devstack.Process], console: Console) -> None:
    """Serve the dashboard next to the demo's workers until Ctrl-C; new uploads to the demo
    bucket are processed too."""
    from workers.web.server import Served
    from workers.web.wiring import build_app

    app = build_app(settings, settings.web_host, dashboard=True)
    try:
        served = Served(app, settings.web_host, settings.web_port)
    except PermanentError as exc:
        console.print(f"[yellow]{exc.message}; using a free port instead[/]")
        served = Served(app, settings.web_host, 0)
    served.start()

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A supervisor's TERM stops everything too, like Ctrl-C (the processes run in their own
    # sessions and would outlive us otherwise).
    signal.signal(signal.SIGTERM, interrupt)
    console.print(f"dashboard: [bold]{served.url}/[/]")
    if settings.s3_endpoint_url:
        console.print(f"S3 (and SQS) at {settings.s3_endpoint_url}")
    console.print("the pipeline and the dashboard keep running; Ctrl-C stops them")
    try:
        while all(p.alive() for p in processes):
            time.sleep(1)
        for p in processes:
            if not p.alive():
                console.print(f"[red]{p.name} exited[/]:\n{p.tail()}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        served.stop()
        _stop(processes)
