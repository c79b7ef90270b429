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
    CONFIGURATION = "configuration"
    INTERNAL = "internal"


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""

    transient: bool = False

    def __init__(
        self, category: ErrorCategory, message: str, *, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.request_id = request_id  # the provider's id for the failed call, when there was one

    def __str__(self) -> str:
        return f"{self.category}: {self.message}"


class PermanentError(PipelineError):
    """Retrying cannot help: the input or the request itself is wrong. Goes to the dead letters."""

    transient = False


class TransientError(PipelineError):
    """Worth retrying later; `retry_after_s` carries the server's hint when it gave one."""

    transient = True

    def __init__(
        self,
        category: ErrorCategory,
        message: str,
        *,
        retry_after_s: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(category, message, request_id=request_id)
        self.retry_after_s = retry_after_s
