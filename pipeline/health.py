"""Dependency health as this process sees it: one log line when a dependency goes down, one when
it is back, instead of a line (or a traceback) for every failure in between."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from pipeline.errors import ErrorCategory, PipelineError

log = logging.getLogger(__name__)

DATABASE = "database"
BROKER = "broker"
OBJECT_STORE = "object store"
PROVIDER = "model provider"
RATE_LIMIT = "model provider rate limit"

# Which dependency an outage error is about, and the wait reasons (pipeline/usecases/waiting.py)
# of the documents that wait for it.
_BY_CATEGORY = {
    ErrorCategory.DATABASE_UNAVAILABLE: DATABASE,
    ErrorCategory.BROKER_UNAVAILABLE: BROKER,
    ErrorCategory.STORAGE_UNAVAILABLE: OBJECT_STORE,
    ErrorCategory.PROVIDER_UNAVAILABLE: PROVIDER,
    ErrorCategory.TIMEOUT: PROVIDER,
    ErrorCategory.PROVIDER_RATE_LIMITED: RATE_LIMIT,
}
WAIT_REASONS: dict[str, tuple[str, ...]] = {}
for _category, _name in _BY_CATEGORY.items():
    WAIT_REASONS[_name] = (*WAIT_REASONS.get(_name, ()), _category.value)


def dependency_of(error: PipelineError) -> str | None:
    """The dependency an outage error is about; None when the error is not an outage."""
    if not error.outage:
        return None
    return _BY_CATEGORY.get(error.category)


@dataclass(slots=True)
class _Down:
    since: float
    failures: int


class Health:
    """Up/down state per dependency name, thread-safe. `down` and `up` return True when the
    state changed, which is when they log."""

    def __init__(self) -> None:
        self._down: dict[str, _Down] = {}
        self._lock = threading.Lock()

    def down(self, name: str, reason: str) -> bool:
        with self._lock:
            state = self._down.get(name)
            if state is not None:
                state.failures += 1
                return False
            self._down[name] = _Down(since=time.monotonic(), failures=1)
        log.warning(
            "%s unavailable (%s); work waits for it and resumes by itself", name, _short(reason)
        )
        return True

    def up(self, name: str) -> bool:
        with self._lock:
            state = self._down.pop(name, None)
        if state is None:
            return False
        log.warning(
            "%s is back after %.0f s (%d failure(s) while it was down)",
            name,
            time.monotonic() - state.since,
            state.failures,
        )
        return True

    def is_down(self, name: str) -> bool:
        with self._lock:
            return name in self._down

    def down_now(self) -> list[str]:
        with self._lock:
            return sorted(self._down)


def _short(text: str) -> str:
    return " ".join(text.split())[:300]


# One per process: what this process has seen.
HEALTH = Health()
