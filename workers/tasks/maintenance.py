"""Periodic tasks: the sweep (resume waiting documents, re-enqueue lost work, notice a broker
that came back empty), bucket reconciliation, page-payload retention, and the ops roll-up
behind the dashboards.

They run while dependencies may be down: a database or broker that is unreachable is one log
line when it goes down and one when it is back (pipeline/health.py), not a traceback per run.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from functools import cache

import redis
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from pipeline import health
from pipeline.cost.batch import CycleReport as BatchCycle
from pipeline.cost.waiting import wake_documents
from pipeline.health import HEALTH
from pipeline.settings import get_settings
from pipeline.usecases.recovery import reconcile, requeue_pending, sweep
from pipeline.usecases.retention import delete_expired_payloads
from pipeline.usecases.waiting import resume_due
from workers.app import app
from workers.policy import DATABASE_ERRORS, dependencies_up
from workers.runtime import collaborators
from workers.tasks.documents import enqueue_document

log = logging.getLogger(__name__)

# Lives only in the broker's Redis: when it is missing, the broker lost its data (a restart
# without persistence, a flush), and every message it held with it.
BROKER_MARKER = "pagemill:broker-epoch"

_BROKER_ERRORS = (BrokerError, RedisError, ConnectionError, TimeoutError)


@cache
def _broker_client() -> redis.Redis:
    return redis.Redis.from_url(get_settings().broker_url, socket_timeout=5)


def broker_lost_its_messages(client: redis.Redis) -> bool:
    """True when the broker has no marker: it was restarted empty (or this is its first
    sweep). The caller re-enqueues what Postgres says is pending, then calls
    `remember_broker` so that the next sweeps do not do it again."""
    return not client.exists(BROKER_MARKER)


def remember_broker(client: redis.Redis) -> None:
    client.set(BROKER_MARKER, uuid.uuid4().hex)


@app.task(name="pagemill.sweep", ignore_result=True)
def sweep_stuck() -> int:
    """Every PAGEMILL_SWEEP_INTERVAL_S: resume documents whose wait is over, re-enqueue the
    pending ones at once if the broker came back empty, and re-enqueue stuck work (pending
    past PAGEMILL_STUCK_AFTER_S, or a lease that expired). Concurrent sweeps are safe: rows
    are taken with SKIP LOCKED, and a second message for a document is a no-op."""
    deps = collaborators()
    client = _broker_client()
    count = 0
    try:
        lost = broker_lost_its_messages(client)
        if lost:
            count += len(requeue_pending(deps.sessions, enqueue_document))
            remember_broker(client)
        count += len(resume_due(deps.sessions, enqueue_document))
        count += len(
            sweep(
                deps.sessions,
                stuck_after=timedelta(seconds=deps.settings.stuck_after_s),
                enqueue=enqueue_document,
            )
        )
    except DATABASE_ERRORS as exc:
        HEALTH.down(health.DATABASE, str(exc))
        return count
    except _BROKER_ERRORS as exc:
        HEALTH.down(health.BROKER, str(exc))
        return count
    # Documents that wait for either are due now (resumed by the next sweep).
    dependencies_up((health.DATABASE, health.BROKER))
    return count


@app.task(name="pagemill.reconcile", ignore_result=True)
def reconcile_buckets() -> int:
    deps = collaborators()
    settings = get_settings()
    found = 0
    for bucket in settings.reconcile_buckets:
        found += len(
            reconcile(
                deps.sessions,
                deps.s3,
                bucket,
                schema_name=settings.schema_name,
                provider=settings.default_provider,
                enqueue=enqueue_document,
            )
        )
    return found


@app.task(name="pagemill.ops_rollup", ignore_result=True)
def ops_rollup() -> int:
    from pipeline.usecases.rollup import margins_for, roll_up

    deps = collaborators()
    settings = deps.settings
    try:
        run = roll_up(
            deps.sessions, margins=margins_for(settings.task_time_limit_s, settings.retry_cap_s)
        )
    except DATABASE_ERRORS as exc:
        HEALTH.down(health.DATABASE, str(exc))
        return 0
    return run.chunks if run else 0


@app.task(name="pagemill.retention", ignore_result=True)
def delete_old_payloads() -> int:
    """Every PAGEMILL_RETENTION_INTERVAL_S: delete page images of documents final for longer
    than PAGEMILL_PAYLOAD_RETENTION_DAYS."""
    deps = collaborators()
    try:
        deleted = delete_expired_payloads(
            deps.sessions, timedelta(days=deps.settings.payload_retention_days)
        )
    except DATABASE_ERRORS as exc:
        HEALTH.down(health.DATABASE, str(exc))
        return 0
    return deleted


def run_batch_cycle() -> BatchCycle:
    """Submit queued batch requests in groups and collect ended batches (pipeline/cost/batch)."""
    from pipeline.cost.batch import BatchRunner

    deps = collaborators()
    settings = deps.settings
    runner = BatchRunner(
        sessions=deps.sessions,
        extractor_for=deps.extractor_for,
        prices=deps.prices,
        wake=lambda ids: wake_documents(deps.sessions, ids, enqueue_document),
        max_requests=settings.batch_max_requests,
        min_requests=settings.batch_min_requests,
        max_wait_s=settings.batch_max_wait_s,
        max_attempts=settings.batch_max_attempts,
        recheck_s=settings.budget_recheck_s,
    )
    return runner.run_once()


@app.task(name="pagemill.batches", ignore_result=True)
def batch_cycle() -> int:
    """Every PAGEMILL_BATCH_POLL_INTERVAL_S: submit waiting batch requests, collect ended
    batches. A database that is down is one line (the next run picks everything up)."""
    try:
        return run_batch_cycle().submitted
    except DATABASE_ERRORS as exc:
        HEALTH.down(health.DATABASE, str(exc))
        return 0
