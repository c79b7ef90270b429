"""Logging for every pagemill process: text for people or one JSON object per line, with the
document id, task id, stage and provider request id of the work at hand.

The ids come from context variables set once where the work starts (a task, a provider call),
never formatted into each message: every line logged while the work runs carries them,
third-party libraries' lines (Celery's, the SDKs') included. Each thread and each asyncio task
has its own values.

What is logged names documents, never their content: no page text, extracted values, prompts
or model answers at INFO or above, and no secrets (see tests/integration/test_json_logs.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

# The fields every line may carry; None: not known here.
FIELDS = ("document_id", "task_id", "stage", "provider_request_id")

_context: dict[str, ContextVar[Any]] = {
    name: ContextVar(f"pagemill_{name}", default=None) for name in FIELDS
}

# Third-party clients log request bodies and headers at DEBUG; keep them to warnings.
_NOISY = ("botocore", "boto3", "urllib3", "httpx", "httpcore", "anthropic", "openai", "s3transfer")


def _known(values: Mapping[str, Any]) -> None:
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")


def bind(**values: Any) -> None:
    """Set fields for the rest of this thread's (or asyncio task's) current work."""
    _known(values)
    for name, value in values.items():
        _context[name].set(value)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Set fields for the duration of a block (a task); after it, every field is as it was
    before, including those `bind` set inside the block."""
    _known(values)
    tokens = [
        (var, var.set(values[name] if name in values else var.get()))
        for name, var in _context.items()
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current() -> dict[str, Any]:
    return {name: var.get() for name, var in _context.items() if var.get() is not None}


class ContextFilter(logging.Filter):
    """Puts the context fields on each record (as attributes) for the formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            value = var.get()
            if value is None and name == "task_id":
                value = _celery_task_id(record)
            setattr(record, name, value)
        return True


def _celery_task_id(record: logging.LogRecord) -> str | None:
    # Celery logs a task's receipt and result outside the task, passing the task's fields as
    # `extra={"data": {...}}` for handlers like this one.
    data = getattr(record, "data", None)
    if record.name.startswith("celery") and isinstance(data, Mapping):
        found = data.get("id")
        return str(found) if found else None
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, process, the
    context fields that are known, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
            "pid": record.process,
        }
        if record.threadName and record.threadName != "MainThread":
            entry["thread"] = record.threadName
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def _with_fields(line: str, record: logging.LogRecord) -> str:
    fields = [
        f"{name}={value}" for name in FIELDS if (value := getattr(record, name, None)) is not None
    ]
    if not fields:
        return line
    head, sep, rest = line.partition("\n")  # keep a traceback below the fields
    return f"{head} [{' '.join(fields)}]{sep}{rest}"


class TextFormatter(logging.Formatter):
    """The usual one-line format, with the known context fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _with_fields(super().format(record), record)


class _WithContext(logging.Formatter):
    """Another formatter's line with the context fields appended (for Celery's text format)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return _with_fields(self.inner.format(record), record)


def append_context(handler: logging.Handler) -> None:
    """Make `handler` append the context fields to its lines (idempotent)."""
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
    formatter = handler.formatter or logging.Formatter()
    if not isinstance(formatter, _WithContext):
        handler.setFormatter(_WithContext(formatter))


def configure(log_format: Literal["text", "json"], level: int | str = logging.INFO) -> None:
    """Send every logger's records to stderr in `log_format`, replacing earlier handlers (a
    process configures logging once, at start; forked processes inherit it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Loggers that bring their own handlers (uvicorn's, Celery's) would print twice or in
    # another format: their records go to the root handler instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)


def say_as_json(message: str, stream: IO[str] | None = None) -> None:
    """One JSON line written with a single os.write, for code that runs in a signal handler
    (where logging's locks could deadlock), in place of Celery's plain `safe_say`."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "warning",
        "logger": "celery.apps.worker",
        "message": message.strip(),
        "pid": os.getpid(),
    }
    target = stream if stream is not None else sys.__stderr__
    if target is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(target.fileno(), (json.dumps(entry) + "\n").encode())
