"""The one task decorator: retries, waits for outages, dead letters and logging for every
document task.

What happens to a failure, by kind (pipeline/errors.py):

* permanent (the input or the request is wrong): the document fails into the dead letters;
* an outage (database, broker, object store, provider down, rate-limiting or not answering):
  the document waits in Postgres (pipeline/usecases/waiting.py) with a backoff capped at
  PAGEMILL_WAIT_CAP_S, for as long as the outage lasts, without using up its retries; only a
  run of waits longer than PAGEMILL_MAX_WAIT_S gives up;
* any other transient failure (a task or OCR running too long): retried with backoff, counted
  in `documents.retries`; past PAGEMILL_TASK_MAX_RETRIES the document fails.

A wait is a row: a short one also gets a delayed broker message as a nudge (never longer than
PAGEMILL_RETRY_CAP_S, below the broker's visibility timeout), a long one is resumed by the
beat's sweep. When the database itself is down the wait cannot be written, so the message
carries it (a retry of the same task, which may take back its own lease).

Logs stay quiet during an outage: one line when a dependency goes down and one when it is back
(pipeline/health.py); the documents that wait for it log at DEBUG.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from pipeline import health, logs, metrics
from pipeline.db.session import transaction
from pipeline.errors import ErrorCategory, PermanentError, PipelineError, TransientError
from pipeline.health import HEALTH
from pipeline.retry import RetryPolicy
from pipeline.settings import get_settings
from pipeline.usecases import waiting
from pipeline.usecases.process import give_up
from workers.app import app
from workers.runtime import collaborators

log = logging.getLogger(__name__)

DocumentFn = Callable[[int, str], object]

# What a document task that returned a status has shown to be up, by queue.
_USED_BY_QUEUE = {
    "prepare": (health.DATABASE, health.OBJECT_STORE),
    "extract": (health.DATABASE, health.PROVIDER, health.RATE_LIMIT),
}

DATABASE_ERRORS = (OperationalError, InterfaceError)


def classify(exc: Exception) -> PipelineError:
    """Every exception in our taxonomy: infrastructure that is down now may be up later."""
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, DATABASE_ERRORS):
        return TransientError(ErrorCategory.DATABASE_UNAVAILABLE, f"database: {_short(exc)}")
    if isinstance(exc, SoftTimeLimitExceeded):
        # The document's own doing (too long for the time limit): counts as a retry.
        return TransientError(ErrorCategory.TIMEOUT, "task exceeded its time limit", outage=False)
    if isinstance(exc, BrokerError | RedisConnectionError | RedisTimeoutError):
        return TransientError(ErrorCategory.BROKER_UNAVAILABLE, f"broker: {_short(exc)}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(ErrorCategory.INTERNAL, f"connection: {_short(exc)}")
    return PermanentError(ErrorCategory.INTERNAL, f"{type(exc).__name__}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def retry_policy() -> RetryPolicy:
    settings = get_settings()
    return RetryPolicy(
        max_retries=settings.task_max_retries,
        base_s=settings.retry_base_s,
        cap_s=settings.retry_cap_s,
    )


def document_task(name: str, queue: str) -> Callable[[DocumentFn], Any]:
    """Register `fn(document_id, task_id)` as a task with the failure handling above (the
    only retry layer: the SDKs' own retries are off)."""

    def wrap(fn: DocumentFn) -> Any:
        @app.task(name=name, bind=True, acks_late=True, max_retries=None)
        @functools.wraps(fn)
        def run(self: Task[Any, Any], document_id: int) -> str:
            logs.bind(document_id=int(document_id), stage=queue)  # the task id: see workers.app
            try:
                # The task id stays the same across retries and redeliveries of this message:
                # the document's lease is ours to take back after a failure we could not report.
                status = fn(document_id, str(self.request.id))
            except Retry:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below; nothing is lost
                return _after_failure(self, document_id, classify(exc), exc)
            if status is not None:
                dependencies_up(_USED_BY_QUEUE.get(queue, (health.DATABASE,)))
            return str(status)

        return run

    return wrap


def _after_failure(
    task: Task[Any, Any], document_id: int, error: PipelineError, exc: Exception
) -> str:
    if not isinstance(error, TransientError):
        give_up(collaborators().sessions, document_id, error)
        return f"failed: {error.category}"
    settings = get_settings()
    dependency = health.dependency_of(error)
    known_down = dependency is not None and not HEALTH.down(dependency, str(error))
    rules = retry_policy()
    cap_s = settings.wait_cap_s if error.outage else rules.cap_s
    try:
        with transaction(collaborators().sessions) as session:
            parked = waiting.wait_document(
                session,
                document_id,
                reason=error.category.value,
                backoff=waiting.Backoff(
                    base_s=rules.base_s, cap_s=cap_s, floor_s=error.retry_after_s or 0.0
                ),
                counts=not error.outage,
                owner=str(task.request.id),
                error=(error.category.value, error.message),
            )
    except DATABASE_ERRORS as db_exc:
        # The wait cannot be written: the message carries it (a retry of this task, which may
        # take back its own lease), at most retry_cap_s ahead (below the visibility timeout).
        HEALTH.down(health.DATABASE, _short(db_exc))
        retries = task.request.retries or 0
        countdown = max(
            error.retry_after_s or 0.0,
            random.uniform(0.5, 1.0) * min(rules.cap_s, rules.base_s * 2**retries),
        )
        log.debug("document %s: %s; database down, retry in %.1fs", document_id, error, countdown)
        metrics.retry_scheduled(error.category)
        raise task.retry(countdown=min(countdown, rules.cap_s), exc=exc) from None
    if parked is None:
        log.info("document %s: %s; it is no longer ours to retry", document_id, error)
        return "given back"
    if not error.outage and parked.retries > rules.max_retries:
        log.warning(
            "document %s: giving up after %d retries: %s", document_id, parked.retries - 1, error
        )
        give_up(collaborators().sessions, document_id, error)
        return f"failed: {error.category}"
    if settings.max_wait_s and parked.waited_s > settings.max_wait_s:
        log.warning(
            "document %s: giving up after waiting %.0f s (PAGEMILL_MAX_WAIT_S): %s",
            document_id,
            parked.waited_s,
            error,
        )
        give_up(
            collaborators().sessions,
            document_id,
            PermanentError(
                error.category,
                f"still failing after waiting {parked.waited_s / 3600:.1f} h: {error.message}",
            ),
        )
        return f"failed: {error.category}"
    metrics.retry_scheduled(error.category)
    level = logging.DEBUG if known_down else logging.INFO
    log.log(level, "document %s: %s; waits %.1fs", document_id, error, parked.delay_s)
    if parked.delay_s <= rules.cap_s:
        # A short wait: a delayed message resumes it on time (the row is the truth; the sweep
        # resumes it anyway if this message is lost).
        try:
            task.retry(countdown=parked.delay_s, exc=exc)
        except Retry:
            raise
        except Exception as nudge_exc:  # noqa: BLE001 - the sweep resumes it from Postgres
            HEALTH.down(health.BROKER, _short(nudge_exc))
    return f"waiting: {error.category}"


def dependencies_up(names: tuple[str, ...]) -> None:
    """Dependencies that a task just used successfully: if this process had them down, say
    they are back and make every document that waits for them due now."""
    back = [name for name in names if HEALTH.up(name)]
    if not back:
        return
    reasons = [reason for name in back for reason in health.WAIT_REASONS.get(name, ())]
    try:
        with transaction(collaborators().sessions) as session:
            woken = waiting.wake(session, reasons)
    except DATABASE_ERRORS as exc:
        log.debug("could not wake the documents waiting for %s: %s", back, _short(exc))
        return
    if woken:
        log.info("%d waiting document(s) are due now that %s is back", woken, ", ".join(back))
