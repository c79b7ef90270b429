"""The one task decorator: retry policy, dead-lettering and logging for every pipeline task."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError, OperationalError

from pipeline.errors import ErrorCategory, PipelineError, TransientError
from pipeline.retry import RetryPolicy
from pipeline.settings import get_settings
from pipeline.usecases.process import give_up
from workers.app import app
from workers.runtime import collaborators

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def classify(exc: BaseException) -> PipelineError:
    """Every exception as our taxonomy: infrastructure hiccups are transient."""
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, OperationalError | DBAPIError) and getattr(exc, "connection_invalidated", True):
        return TransientError(ErrorCategory.DATABASE_UNAVAILABLE, f"database: {_short(exc)}")
    if isinstance(exc, SoftTimeLimitExceeded):
        return TransientError(ErrorCategory.TIMEOUT, "task exceeded its time limit")
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(ErrorCategory.PROVIDER_UNAVAILABLE, _short(exc))
    from pipeline.errors import PermanentError

    return PermanentError(ErrorCategory.INTERNAL, f"{type(exc).__name__}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def policy() -> RetryPolicy:
    settings = get_settings()
    return RetryPolicy(
        max_retries=settings.task_max_retries, base_s=settings.retry_base_s, cap_s=settings.retry_cap_s
    )


def document_task(name: str, queue: str) -> Callable[[F], Any]:
    """Register `fn(document_id)` as a task that retries transient errors with backoff and
    jitter, and fails the document into the dead letters when retries run out."""

    def wrap(fn: F) -> Any:
        @app.task(name=name, bind=True, queue=queue, acks_late=True, max_retries=None)
        @functools.wraps(fn)
        def run(self: Task, document_id: int) -> str:
            try:
                result = fn(document_id)
            except Retry:
                raise
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    raise  # SystemExit, KeyboardInterrupt: let the worker die; the lease expires
                error = classify(exc)
                retries = self.request.retries or 0
                rules = policy()
                if rules.should_retry(error, retries):
                    hint = error.retry_after_s if isinstance(error, TransientError) else None
                    countdown = rules.delay_s(retries, hint)
                    log.info(
                        "document %s: %s; retry %d in %.1fs", document_id, error, retries + 1, countdown
                    )
                    raise self.retry(countdown=countdown, exc=exc) from None
                log.warning("document %s: giving up after %d retries: %s", document_id, retries, error)
                give_up(collaborators().sessions, document_id, error)
                return f"failed: {error.category}"
            return str(result)

        return run

    return wrap
