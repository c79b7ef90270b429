"""Commands that start the pipeline's processes: migrate the database, then worker, beat,
ingest and web; demo runs them all on generated documents."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Annotated

import click
import typer

from pipeline.errors import PipelineError
from pipeline.settings import Settings, get_settings
from workers.cli.shared import die, settings_or_exit, setup_logging

if TYPE_CHECKING:
    from celery import Celery


def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Create or upgrade the Postgres schema (run before starting workers)."""
    from pipeline.db.migrate import upgrade

    settings = settings_or_exit()
    try:
        upgrade(settings.database_url, revision)
    except Exception as exc:  # noqa: BLE001 — one clear line for any driver/alembic error
        die(f"migration failed: {' '.join(str(exc).split())[:300]}")
    typer.echo(f"database at revision {revision}")


def _celery_quiet(settings: Settings) -> list[str]:
    # Celery prints a banner to stdout at start; with JSON logs every line must be JSON.
    return ["--quiet"] if settings.log_format == "json" else []


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

    settings = settings_or_exit()
    if queues_ is None and pool is None and concurrency is None:
        from workers import launcher, telemetry

        setup_logging(settings, loglevel.upper())
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
        setup_logging(settings, loglevel.upper())
    size = concurrency or settings.worker_concurrency
    # What the worker runs at once sizes its broker and database connection pools: make the
    # flag the setting for this process and the pool processes it forks.
    os.environ["PAGEMILL_WORKER_CONCURRENCY"] = str(size)
    get_settings.cache_clear()
    from workers.app import app as celery_app
    from workers.app import size_broker_pool
    from workers.beat import SCHEDULER

    size_broker_pool(celery_app, size)  # the app may have been built before the line above
    code = _run_celery(
        celery_app,
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
        ],
    )
    # Celery's exit code, passed on: a worker that stopped on an unrecoverable error (a broker
    # connection it could not restore) must not exit 0, or a supervisor with restart-on-failure
    # would leave it down.
    raise typer.Exit(code)


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
    settings = settings_or_exit()
    setup_logging(settings, logging.DEBUG if verbose else logging.INFO)
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
        die(str(exc))
    stop = threading.Event()
    url = queue_url or settings.sqs_queue_url
    if url is None:
        die("no queue: pass --queue-url or set PAGEMILL_SQS_QUEUE_URL (or use --webhook)")
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
        die(exc.message)
    what = "dashboard" if dashboard else "webhook"
    path = "/" if dashboard else "/events"
    logging.getLogger("pagemill.web").info("%s listening on %s%s", what, served.url, path)
    served.serve_forever()


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
    settings = settings_or_exit()
    setup_logging(settings, logging.DEBUG if verbose else logging.INFO)
    _serve(
        settings,
        host or settings.web_host,
        settings.web_port if port is None else port,
        dashboard=True,
    )


def _exit_on_term(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def beat(loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO") -> None:
    """Run the scheduler for the periodic sweep and reconciliation. A second beat waits on a
    lock in Redis until the first is gone, so they never schedule twice."""
    from workers.app import app as celery_app
    from workers.beat import SCHEDULER
    from workers.beatlock import hold_beat_lock

    settings = settings_or_exit()
    # Before the lock (its waits are logged) and before Celery's own first warnings.
    setup_logging(settings, loglevel.upper())
    held = hold_beat_lock(settings.broker_url)
    atexit.register(held.release)  # a clean stop hands over at once, not after the TTL
    # Until Celery installs its own handlers, make SIGTERM an exit that runs atexit.
    signal.signal(signal.SIGTERM, _exit_on_term)
    code = _run_celery(
        celery_app,
        [*_celery_quiet(settings), "beat", f"--loglevel={loglevel}", f"--scheduler={SCHEDULER}"],
    )
    raise typer.Exit(code)


def _run_celery(celery_app: Celery, argv: list[str]) -> int:
    """Celery's own command line on our app, and its exit code. `Celery.start` (and
    `worker_main`) drop the code click returns: a worker stopped by an unrecoverable error
    exited 0 through them."""
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = celery_app  # what Celery.start does, to find the app
    try:
        code: object = celery_command.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as stop:
        code = stop.exit_code
    finally:
        celery_command.params[0].default = None
    return _worker_exit_code(code)


def _worker_exit_code(code: object) -> int:
    """Celery's exit code as an int: None is a clean stop (0), a code that is not a number is a
    failure (1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


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

    code = run_demo(settings_or_exit(), keep=keep, timeout_s=timeout)
    raise typer.Exit(code)
