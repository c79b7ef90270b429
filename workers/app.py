"""The Celery app: Redis broker, late acks, prefetch 1, no result backend.

Worker processes warm up at start (collaborators, database connection, the provider's SDK)
instead of in their first task; see the signal handlers at the end.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

from celery import Celery, signals
from kombu import Queue

from pipeline.settings import Settings, get_settings
from workers import queues
from workers.broker import TRANSPORT


def make_app(settings: Settings) -> Celery:
    app = Celery(
        "pagemill",
        broker=settings.broker_url,
        include=["workers.tasks.documents", "workers.tasks.maintenance"],
    )
    secure = settings.broker_url.startswith("rediss://")
    app.conf.update(
        # kombu's Redis transport with the fix for a broker restart (workers/broker.py).
        broker_transport=TRANSPORT,
        # rediss:// verifies the server's certificate (kombu alone would not check it).
        broker_use_ssl={"ssl_cert_reqs": ssl.CERT_REQUIRED} if secure else None,
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        # A new pool process warms up (imports, database, SDK) before it reports for work;
        # Celery's default 4 s wait for that report killed processes on a busy machine.
        worker_proc_alive_timeout=30.0,
        task_default_queue=queues.PREPARE,
        task_queues=[Queue(name) for name in queues.CONSUMED],
        task_routes=queues.ROUTES,
        task_time_limit=settings.task_time_limit_s,
        # The soft limit lets a task give its document back before the hard kill.
        task_soft_time_limit=settings.soft_time_limit_s,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # A broker that is down for minutes (or hours) is waited for, never given up on: a
        # worker that stopped retrying would sit idle or exit while work waits in Postgres.
        broker_connection_max_retries=None,
        broker_transport_options={
            # A message unacked this long is handed to another worker: it must exceed the
            # longest task plus the longest retry countdown, or a slow task runs twice at once.
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        },
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_scheduler="workers.beat:MemoryScheduler",
        beat_schedule={
            "sweep": {"task": "pagemill.sweep", "schedule": settings.sweep_interval_s},
            "reconcile": {"task": "pagemill.reconcile", "schedule": settings.reconcile_interval_s},
            **(
                {
                    "ops-rollup": {
                        "task": "pagemill.ops_rollup",
                        "schedule": settings.ops_rollup_interval_s,
                    }
                }
                if settings.ops_rollup_interval_s
                else {}
            ),
            "retention": {"task": "pagemill.retention", "schedule": settings.retention_interval_s},
            # Submits queued batch requests and collects ended batches (pipeline/cost/batch.py).
            "batches": {"task": "pagemill.batches", "schedule": settings.batch_poll_interval_s},
        },
    )
    size_broker_pool(app, settings.worker_concurrency)
    return app


def size_broker_pool(app: Celery, concurrency: int) -> None:
    """Size the broker connections to the tasks a worker runs at once: kombu's pool defaults to
    10 and late acks need a connection per task in flight, or acks are lost under load. Called
    again by `pagemill worker --concurrency N` before the worker starts."""
    app.conf.broker_pool_limit = max(10, concurrency + 5)
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "max_connections": max(20, concurrency * 2 + 10),
    }


app = make_app(get_settings())


# --- warm-up at process start ------------------------------------------------------------------

_main_process: dict[str, int] = {}


@signals.celeryd_after_setup.connect
def _before_pool_start(instance: Any, **_: Any) -> None:
    # The worker's main process, after logging and --queues were set up, before its pool (or
    # embedded beat) forks. Importing modules is safe here and shared by every pool process;
    # building clients is not (sockets and pools must not cross a fork), so that waits for the
    # process that runs the tasks. Only the extract stage calls the provider.
    _main_process["pid"] = os.getpid()
    # Before the fork too: the pool processes inherit the metrics directory.
    from workers import telemetry

    telemetry.serve(get_settings(), "worker")
    if queues.EXTRACT in instance.app.amqp.queues.consume_from:
        from workers.runtime import import_provider_sdk

        import_provider_sdk()


@signals.worker_process_init.connect
def _in_pool_process(**_: Any) -> None:
    # Prefork children: forked after celeryd_after_setup, they inherit the main pid and differ
    # from it. The solo pool sends this signal in the main process, before that pid is known
    # and before beat forks: that case is left to worker_ready.
    main = _main_process.get("pid")
    if main is not None and os.getpid() != main:
        from workers.runtime import warm_up

        warm_up()


@signals.worker_ready.connect
def _in_main_process(sender: Any, **_: Any) -> None:
    # Threads (and solo) pools run tasks in the main process; consuming starts after this.
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if not isinstance(sender.pool, PreforkPool):
        from workers.runtime import warm_up

        warm_up()


# --- logging and metrics of every worker process ---------------------------------------------


def _json_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connected (JSON only), Celery configures no logging of its own: its lines (worker, beat,
    # task results) go through our handler, one JSON object per line.
    from pipeline import logs

    logs.configure("json", loglevel or "INFO")
    # Celery writes its shutdown notices from the signal handler straight to the terminal (not
    # through logging, which is unsafe there); write them as JSON lines instead.
    import celery.apps.worker

    celery.apps.worker.safe_say = logs.say_as_json  # type: ignore[attr-defined]


def _context_on_celery_lines(logger: logging.Logger, **_: Any) -> None:
    # Text logs keep Celery's own format (people and scripts read it); the context fields of
    # the work are appended to each line.
    from pipeline import logs

    for handler in logger.handlers:
        logs.append_context(handler)


if get_settings().log_format == "json":
    signals.setup_logging.connect(_json_logging, weak=False)
else:
    signals.after_setup_logger.connect(_context_on_celery_lines, weak=False)
    signals.after_setup_task_logger.connect(_context_on_celery_lines, weak=False)


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    # Set once per task; every line logged while it runs carries the id (and whatever the task
    # adds: document id, stage, provider request id).
    from pipeline import logs

    logs.bind(task_id=task_id, document_id=None, stage=None, provider_request_id=None)


@signals.task_postrun.connect
def _task_ended(**_: Any) -> None:
    from pipeline import logs

    logs.bind(task_id=None, document_id=None, stage=None, provider_request_id=None)


@signals.worker_process_shutdown.connect
def _pool_process_exits(pid: int | None = None, **_: Any) -> None:
    # The child's live gauges (calls in flight) end with it; its counters stay in the sum.
    from pipeline import metrics

    metrics.process_exited(pid or os.getpid())
