"""The one task decorator: retry policy, dead-lettering and logging for every document task."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import InterfaceError, OperationalError

from pipeline import logs, metrics
from pipeline.domain import DocumentStatus
from pipeline.errors import ErrorCategory, PermanentError, PipelineError, TransientError
from pipeline.retry import RetryPolicy
from pipeline.settings import get_settings
from pipeline.usecases.process import give_up
from workers import queues
from workers.app import app
from workers.runtime import collaborators

log = logging.getLogger(__name__)

DocumentFn = Callable[[int, str], object]


def classify(exc: Exception) -> PipelineError:
    """Every exception in our taxonomy: infrastructure that is down now may be up later."""
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, OperationalError | InterfaceError):
        return TransientError(ErrorCategory.DATABASE_UNAVAILABLE, f"database: {_short(exc)}")
    if isinstance(exc, SoftTimeLimitExceeded):
        return TransientError(ErrorCategory.TIMEOUT, "task exceeded its time limit")
    if isinstance(exc, ConnectionError | TimeoutError | BrokerError):
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


def _publish_dead_letter(document_id: int, error: str) -> None:
    # Postgres holds the dead letter; this copy lets queue-watching tools see it too.
    app.send_task("pagemill.dead_letter", args=[document_id, error], queue=queues.DEAD_LETTER)


def document_task(name: str, queue: str) -> Callable[[DocumentFn], Any]:
    """Register `fn(document_id)` as a task: transient errors retry with backoff and jitter
    (this is the only retry layer for them; the SDKs' own retries are off), and a document
    whose retries run out fails into the dead letters."""

    def wrap(fn: DocumentFn) -> Any:
        @app.task(name=name, bind=True, queue=queue, acks_late=True, max_retries=None)
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
                error = classify(exc)
                retries = self.request.retries or 0
                rules = retry_policy()
                if rules.should_retry(error, retries):
                    hint = error.retry_after_s if isinstance(error, TransientError) else None
                    countdown = rules.delay_s(retries, hint)
                    metrics.retry_scheduled(error.category)
                    log.info(
                        "document %s: %s; retry %d in %.1fs",
                        document_id,
                        error,
                        retries + 1,
                        countdown,
                    )
                    raise self.retry(countdown=countdown, exc=exc) from None
                log.warning(
                    "document %s: giving up after %d retries: %s", document_id, retries, error
                )
                give_up(collaborators().sessions, document_id, error)
                _publish_dead_letter(document_id, str(error))
                return f"failed: {error.category}"
            if status is DocumentStatus.FAILED:
                _publish_dead_letter(document_id, "permanent error")
            return str(status)

        return run

    return wrap
