"""Scripted answers for the fake model server (reply, error, batch outcomes, drops); latencies."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ModelApi = Literal["anthropic", "openai"]

# What a scripted reply does. "ok" is a normal answer; the others inject one fault.
ReplyKind = Literal[
    "ok",
    "max_tokens",  # Anthropic stop_reason max_tokens / OpenAI finish_reason length
    "no_usage",  # a reply without `usage`
    "tool_use_without_input",  # Anthropic tool_use block with no `input` (OpenAI: content null)
    "tool_use_input_not_object",  # Anthropic tool_use input is a string (OpenAI: JSON array)
    "no_tool_use",  # Anthropic text block only (OpenAI: prose instead of JSON)
    "refusal",  # Anthropic stop_reason refusal / OpenAI message.refusal
    "pause_turn",  # Anthropic stop_reason pause_turn
    "context_window_exceeded",  # Anthropic stop_reason model_context_window_exceeded
    "invalid_json",  # OpenAI content that is not JSON (Anthropic: a body that is not JSON)
    "no_choices",  # OpenAI reply with an empty `choices` list
    "error",  # an HTTP error status with the API's error JSON
    "raw",  # send `body` as given
    "drop",  # close the connection without answering
    "batch_errored",  # a batch entry that errored (error_type says how)
    "batch_expired",  # a batch entry that expired before it was processed
    "batch_canceled",  # a batch entry canceled before it was processed
]


@dataclass(frozen=True, slots=True)
class Scripted:
    """One scripted answer. Build with `reply()`, `error()` or `drop_connection()`."""

    kind: ReplyKind = "ok"
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # for "raw" (dict/list -> JSON, str/bytes as is) and "error" (overrides)
    fields: Mapping[str, Any] | None = None  # overrides server.fields for this answer
    message: str | None = None  # error message for "error"
    error_type: str | None = None  # error.type for "error" (default from the status)
    error_code: str | None = None  # Anthropic error.details.error_code for "error"
    latency: float | None = None  # overrides server.latency for this answer
    api: ModelApi | None = None  # only consumed by requests to this API (None: either)
    usage: Mapping[str, Any] | None = None  # overrides fields of the reply's usage


def reply(
    kind: ReplyKind = "ok",
    *,
    fields: Mapping[str, Any] | None = None,
    body: Any = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    latency: float | None = None,
    api: ModelApi | None = None,
    usage: Mapping[str, Any] | None = None,
) -> Scripted:
    """A scripted answer of the given kind (see `ReplyKind`); `usage` overrides fields of the
    usage the server would report (e.g. cache tokens)."""
    return Scripted(
        kind=kind,
        status=status,
        headers=dict(headers or {}),
        body=body,
        fields=fields,
        latency=latency,
        api=api,
        usage=dict(usage) if usage is not None else None,
    )


def error(
    status: int,
    *,
    message: str | None = None,
    error_type: str | None = None,
    error_code: str | None = None,
    retry_after: float | str | None = None,
    retry_after_ms: float | str | None = None,
    should_retry: bool | None = None,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    latency: float | None = None,
    api: ModelApi | None = None,
) -> Scripted:
    """A scripted HTTP error in the API's error JSON shape, with retry headers when given."""
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["retry-after"] = _header_number(retry_after)
    if retry_after_ms is not None:
        all_headers["retry-after-ms"] = _header_number(retry_after_ms)
    if should_retry is not None:
        all_headers["x-should-retry"] = "true" if should_retry else "false"
    return Scripted(
        kind="error",
        status=status,
        headers=all_headers,
        body=body,
        message=message,
        error_type=error_type,
        error_code=error_code,
        latency=latency,
        api=api,
    )


def batch_errored(error_type: str = "overloaded_error", message: str | None = None) -> Scripted:
    """A batch entry's outcome: errored with this error type (e.g. invalid_request_error)."""
    return Scripted(kind="batch_errored", error_type=error_type, message=message)


def batch_expired() -> Scripted:
    """A batch entry's outcome: expired (the batch ran past its 24 hours)."""
    return Scripted(kind="batch_expired")


def batch_canceled() -> Scripted:
    """A batch entry's outcome: canceled before it was processed."""
    return Scripted(kind="batch_canceled")


def drop_connection(*, latency: float | None = None, api: ModelApi | None = None) -> Scripted:
    """Close the connection without sending a response (the SDK sees a connection error)."""
    return Scripted(kind="drop", latency=latency, api=api)


def _header_number(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def uniform_latency(low: float, high: float, *, seed: int | None = 0) -> Callable[[Any], float]:
    """A seeded latency distribution: uniform between `low` and `high` seconds."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def draw(_request: Any) -> float:
        with lock:
            return rng.uniform(low, high)

    return draw


def lognormal_latency(
    median: float, sigma: float = 0.35, *, cap: float | None = None, seed: int | None = 0
) -> Callable[[Any], float]:
    """A seeded long-tailed latency distribution (log-normal around `median` seconds)."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def draw(_request: Any) -> float:
        with lock:
            value = rng.lognormvariate(math.log(median), sigma)
        return min(value, cap) if cap is not None else value

    return draw
