"""Periodic tasks: the sweep that re-enqueues stuck work, and bucket reconciliation."""

from __future__ import annotations

from datetime import timedelta

from pipeline.cost.batch import CycleReport as BatchCycle
from pipeline.cost.waiting import wake_documents
from pipeline.settings import get_settings
from pipeline.usecases.recovery import reconcile, sweep
from pipeline.usecases.waiting import resume_due
from workers import queues
from workers.app import app
from workers.runtime import collaborators
from workers.tasks.documents import enqueue_document


@app.task(name="pagemill.sweep", queue=queues.MAINTENANCE, ignore_result=True)
def sweep_stuck() -> int:
    deps = collaborators()
    # Waiting documents whose wait is over (pipeline/usecases/waiting.py). MERGE NOTE: the
    # outages branch's sweep does this too; keep one call.
    resumed = resume_due(deps.sessions, enqueue_document)
    stuck = sweep(
        deps.sessions,
        stuck_after=timedelta(seconds=deps.settings.stuck_after_s),
        enqueue=enqueue_document,
    )
    return len(stuck) + len(resumed)


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


@app.task(name="pagemill.batches", queue=queues.MAINTENANCE, ignore_result=True)
def batch_cycle() -> int:
    return run_batch_cycle().submitted
