"""Error taxonomy: each failure is transient (retry) or permanent (dead letter), with a category."""

from __future__ import annotations

from enum import StrEnum


class ErrorCategory(StrEnum):
    BAD_INPUT = "bad_input"
    UNSUPPORTED_TYPE = "unsupported_type"
    ENCRYPTED = "encrypted"
    TOO_LARGE = "too_large"
    NOT_FOUND = "not_found"
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_REJECTED = "provider_rejected"
    PROVIDER_AUTH = "provider_auth"
    INVALID_OUTPUT = "invalid_output"
    TRUNCATED_OUTPUT = "truncated_output"
    TIMEOUT = "timeout"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    BROKER_UNAVAILABLE = "broker_unavailable"
    CONFIGURATION = "configuration"
    INTERNAL = "internal"


# Infrastructure that is down, not a fault of the document: work waits for it as long as it
# lasts (see pipeline/usecases/waiting.py) and the wait never uses up the document's retries.
OUTAGES = frozenset(
    {
        ErrorCategory.PROVIDER_RATE_LIMITED,
        ErrorCategory.PROVIDER_UNAVAILABLE,
        ErrorCategory.STORAGE_UNAVAILABLE,
        ErrorCategory.DATABASE_UNAVAILABLE,
        ErrorCategory.BROKER_UNAVAILABLE,
    }
)


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose.

    `maybe_billed` marks a provider call that failed after its request was sent (a timeout, a
    connection dropped mid-answer): the provider may bill it, so its cost is unknown, not 0.
    """

    transient: bool = False
    outage: bool = False

    def __init__(
        self,
        category: ErrorCategory,
        message: str,
        *,
        request_id: str | None = None,
        maybe_billed: bool = False,
    ) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.request_id = request_id  # the provider's id for the failed call, when there was one
        self.maybe_billed = maybe_billed

    def __str__(self) -> str:
        return f"{self.category}: {self.message}"


class PermanentError(PipelineError):
    """Retrying cannot help: the input or the request itself is wrong. Goes to the dead letters."""

    transient = False


class TransientError(PipelineError):
    """Worth retrying later; `retry_after_s` carries the server's hint when it gave one.

    `outage` (default: the category is one of OUTAGES) says that something the document needs
    is down: the document waits for it without using up its retries. Say `outage=True` for a
    timeout that is the dependency's (a provider that does not answer), leave it False for one
    that is the document's (OCR or a task running too long).
    """

    transient = True

    def __init__(
        self,
        category: ErrorCategory,
        message: str,
        *,
        retry_after_s: float | None = None,
        request_id: str | None = None,
        outage: bool | None = None,
        maybe_billed: bool = False,
    ) -> None:
        super().__init__(category, message, request_id=request_id, maybe_billed=maybe_billed)
        self.retry_after_s = retry_after_s
        self.outage = category in OUTAGES if outage is None else outage
