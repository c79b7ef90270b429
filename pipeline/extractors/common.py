"""Helpers every HTTP model provider shares: retry hints, status mapping, redaction, prompts."""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from pipeline.domain import PageContent
from pipeline.errors import ErrorCategory, PermanentError, PipelineError, TransientError

if TYPE_CHECKING:
    from pipeline.schemas import SchemaSpec

# 429s that no amount of waiting within a task's retries fixes (monthly / contract spend caps).
_SPEND_LIMIT_CODES = frozenset({"enforced_spend_limit_reached", "contract_spend_limit_reached"})

_MAX_MESSAGE_CHARS = 500


def instruction_text(schema: SchemaSpec, page_count: int, action: str, feedback: str | None) -> str:
    """The closing user instruction, plus the validation errors of the previous answer if any."""
    pages = "page" if page_count == 1 else f"{page_count} pages"
    text = f"Extract the {schema.name} data from the {pages} above and {action}."
    if feedback:
        text += (
            f"\n\nYour previous answer failed validation: {feedback.strip()}\n"
            "Correct these problems; keep every value that was right."
        )
    return text


def page_text_label(page: PageContent) -> str:
    return f"Text layer of page {page.index + 1}:\n{page.text.strip()}"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret (API keys) in `text`, and keep the text short and on one line."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The server's wait hint: `retry-after-ms`, else `retry-after` (seconds or HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return max(0.0, float(email.utils.mktime_tz(parsed)) - time.time())
    return max(0.0, value) if math.isfinite(value) else None


def status_error(
    provider: str,
    status: int,
    headers: Mapping[str, str] | None,
    *,
    detail: str,
    request_id: str | None,
    error_type: str | None = None,
    error_code: str | None = None,
    secrets: Iterable[str | None] = (),
) -> PipelineError:
    """Map an HTTP error status (plus `x-should-retry` and retry hints) onto our taxonomy."""
    transient: bool
    if status == 429:
        if error_code in _SPEND_LIMIT_CODES:
            category, transient = ErrorCategory.PROVIDER_REJECTED, False
        else:
            category, transient = ErrorCategory.PROVIDER_RATE_LIMITED, True
    elif status in (408, 409, 499) or status >= 500:
        category, transient = ErrorCategory.PROVIDER_UNAVAILABLE, True
    elif status in (401, 402, 403):
        category, transient = ErrorCategory.PROVIDER_AUTH, False
    else:  # 400, 404, 413, 422 and anything else the server says is the request's fault
        category, transient = ErrorCategory.PROVIDER_REJECTED, False

    should_retry = (headers.get("x-should-retry") if headers is not None else None) or ""
    if should_retry.strip().lower() == "false":
        transient = False
    elif should_retry.strip().lower() == "true":
        transient = True

    kind = " ".join(part for part in (error_type, error_code) if part)
    message = redact(f"{provider} HTTP {status}{' ' + kind if kind else ''}: {detail}", secrets)
    if transient:
        return TransientError(
            category, message, retry_after_s=retry_after_seconds(headers), request_id=request_id
        )
    return PermanentError(category, message, request_id=request_id)


# Transport failures that happen before a request is on the wire: the provider never saw it.
_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


def connection_error(
    provider: str,
    exc: BaseException,
    *,
    timed_out: bool,
    timeout_s: float,
    secrets: Iterable[str | None] = (),
) -> TransientError:
    """A call that got no answer. The provider being unreachable or slow is an outage (the
    document waits); a request that was sent and then lost (a read timeout, a connection
    dropped mid-answer) may still be billed, so its cost is unknown rather than 0."""
    cause = exc.__cause__ or exc.__context__
    sent = cause is None or type(cause).__name__ not in _NOT_SENT
    if timed_out:
        return TransientError(
            ErrorCategory.TIMEOUT,
            redact(f"{provider}: no response within {timeout_s:g} s", secrets),
            request_id=None,
            outage=True,
            maybe_billed=sent,
        )
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    return TransientError(
        ErrorCategory.PROVIDER_UNAVAILABLE,
        redact(f"{provider}: connection failed ({reason})", secrets),
        request_id=None,
        maybe_billed=sent,
    )


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class LazyClient(Generic[C]):
    """An SDK client built on first use (SDK imports take seconds), once, thread-safely."""

    def __init__(self, build: Callable[[], C]) -> None:
        self._build = build
        self._client: C | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> C | None:
        """The client if it was built already, else None."""
        return self._client

    def get(self) -> C:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = self._build()
        return client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
