"""Periodic tasks: the sweep that re-enqueues stuck work, bucket reconciliation, and the ops
roll-up behind the dashboards."""

from __future__ import annotations

from datetime import timedelta

from pipeline.settings import get_settings
from pipeline.usecases.recovery import reconcile, sweep
from workers import queues
from workers.app import app
from workers.runtime import collaborators
from workers.tasks.documents import enqueue_document


@app.task(name="pagemill.sweep", queue=queues.MAINTENANCE, ignore_result=True)
def sweep_stuck() -> int:
    deps = collaborators()
    stuck = sweep(
        deps.sessions,
        stuck_after=timedelta(seconds=deps.settings.stuck_after_s),
        enqueue=enqueue_document,
    )
    return len(stuck)


@app.task(name="pagemill.reconcile", queue=queues.MAINTENANCE, ignore_result=True)
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


@app.task(name="pagemill.ops_rollup", queue=queues.MAINTENANCE, ignore_result=True)
def ops_rollup() -> int:
    from pipeline.usecases.rollup import margins_for, roll_up

    deps = collaborators()
    settings = deps.settings
    run = roll_up(
        deps.sessions, margins=margins_for(settings.task_time_limit_s, settings.retry_cap_s)
    )
    return run.chunks if run else 0
