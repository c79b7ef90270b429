"""A circuit breaker per provider and model, its state shared by every worker through Redis.

closed: calls go through; `failure_threshold` consecutive outage failures (5xx, 529, timeouts,
dropped connections) open it. open: no call goes to that model until `open_s` has passed; work
goes to a configured secondary, or waits. half-open: one probe call at a time; its success
closes the circuit, its failure opens it again. Any other answer (a 429, a 400) shows the
provider is up and counts as a success. All times are the Redis server's clock.

`peek` says where a call would go without taking anything (used to route); `allow` is asked
right before the request is sent and takes the probe when one is due, so a probe is never
taken by a call that does not happen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import redis

from pipeline.errors import ErrorCategory

log = logging.getLogger(__name__)

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the metric's values

# Failures that say the provider is down, not that our request is wrong or too fast.
OUTAGE_CATEGORIES = frozenset(
    {ErrorCategory.PROVIDER_UNAVAILABLE.value, ErrorCategory.TIMEOUT.value}
)

# `pagemill_circuit_state{provider,model}` (0 closed, 1 half-open, 2 open) is read from Redis at
# scrape time (workers/telemetry.py, over `RedisCircuitBreaker.samples()`): the state is shared
# by every process. `on_state` is called on each change this process sees.
on_state: Callable[[str, str, str], None] | None = None


def is_outage(category: str) -> bool:
    """A call failure that says the provider is down (5xx, 529, timeouts, dropped
    connections), not that the request is wrong or too fast."""
    return str(category) in OUTAGE_CATEGORIES


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    state: str
    retry_at: datetime | None = None  # when a refused caller may ask again


class CircuitBreaker(Protocol):
    def peek(self, provider: str, model: str) -> Verdict: ...
    def allow(self, provider: str, model: str) -> Verdict: ...
    def success(self, provider: str, model: str) -> str:
        """Record an answer; the state before it (a change to closed wakes waiting work)."""
        ...

    def failure(self, provider: str, model: str) -> None: ...
    def state(self, provider: str, model: str) -> str: ...


# A call refused while another one probes waits about this long: the probe is one call.
PROBE_WAIT_MS = 5000


def _changed(provider: str, model: str, before: str, after: str) -> None:
    if before == after:
        return
    # One line per change, not per call: an outage is two log lines.
    log.warning("circuit %s:%s %s -> %s", provider, model, before, after)
    if on_state is not None:
        on_state(provider, model, after)


# KEYS[1] hash {state, failures, until_ms}, KEYS[2] probe lock; ARGV probe_ms, wait_ms, take.
# Returns {allowed, state, retry_at_ms}.
_ALLOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {1, state, 0} end
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until_ms') or '0')
if state == 'open' and now < until_ms then return {0, state, until_ms} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 'half_open', now + tonumber(ARGV[2])} end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'half_open')
end
return {1, 'half_open', 0}
"""

# ARGV: threshold, open_ms. Returns {state before, state after}.
_FAILURE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local before = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if before == 'half_open' or (before == 'closed' and failures >= tonumber(ARGV[1])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until_ms', now + tonumber(ARGV[2]), 'failures', 0)
  redis.call('DEL', KEYS[2])
  return {before, 'open'}
end
return {before, before}
"""

_SUCCESS_LUA = """
local before = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
redis.call('DEL', KEYS[2])
return before
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCircuitBreaker:
    """The breaker for a deployment: every worker sees the same state. A Redis error counts as
    closed (calls go through, the provider's own answer decides): the breaker must never be
    the reason work stops."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        failure_threshold: int = 5,
        open_s: float = 30.0,
        probe_s: float = 150.0,
        prefix: str = "pagemill:circuit",
    ) -> None:
        self._client = client
        self._threshold = failure_threshold
        self._open_ms = int(open_s * 1000)
        self._probe_ms = int(probe_s * 1000)
        self._prefix = prefix
        self._allow = client.register_script(_ALLOW_LUA)
        self._failure = client.register_script(_FAILURE_LUA)
        self._success = client.register_script(_SUCCESS_LUA)

    def _keys(self, provider: str, model: str) -> list[str]:
        base = f"{self._prefix}:{{{provider}:{model}}}"
        return [base, base + ":probe"]

    def peek(self, provider: str, model: str) -> Verdict:
        return self._ask(provider, model, take=False)

    def allow(self, provider: str, model: str) -> Verdict:
        return self._ask(provider, model, take=True)

    def _ask(self, provider: str, model: str, *, take: bool) -> Verdict:
        try:
            allowed, state, at_ms = self._allow(
                keys=self._keys(provider, model),
                args=[self._probe_ms, PROBE_WAIT_MS, "1" if take else "0"],
            )
        except redis.RedisError as exc:
            log.warning("circuit state unavailable (%s); treating as closed", exc)
            return Verdict(True, CLOSED)
        at = datetime.fromtimestamp(int(at_ms) / 1000, UTC) if int(at_ms) else None
        return Verdict(bool(int(allowed)), _text(state), at)

    def failure(self, provider: str, model: str) -> None:
        try:
            before, after = self._failure(
                keys=self._keys(provider, model), args=[self._threshold, self._open_ms]
            )
        except redis.RedisError as exc:
            log.warning("circuit: could not record a failure: %s", exc)
            return
        _changed(provider, model, _text(before), _text(after))

    def success(self, provider: str, model: str) -> str:
        try:
            before = _text(self._success(keys=self._keys(provider, model)))
        except redis.RedisError as exc:
            log.warning("circuit: could not record a success: %s", exc)
            return CLOSED
        _changed(provider, model, before, CLOSED)
        return before

    def state(self, provider: str, model: str) -> str:
        try:
            raw = self._client.hget(self._keys(provider, model)[0], "state")
        except redis.RedisError:
            return CLOSED
        return _text(raw) if raw is not None else CLOSED

    def samples(self) -> list[tuple[str, str, int]]:
        """(provider, model, metric value) of every circuit: the metric's samples."""
        return [(p, m, STATE_VALUES.get(s, 0)) for (p, m), s in sorted(self.states().items())]

    def states(self) -> dict[tuple[str, str], str]:
        """Every circuit this deployment has seen (for `pagemill circuits`)."""
        found: dict[tuple[str, str], str] = {}
        for raw_key in self._client.scan_iter(match=f"{self._prefix}:*"):
            key = _text(raw_key)
            if key.endswith(":probe"):
                continue
            inner = key[len(self._prefix) + 2 : -1]  # strip "prefix:{" and "}"
            provider, _, model = inner.partition(":")
            state = self._client.hget(key, "state")
            found[(provider, model)] = _text(state) if state is not None else CLOSED
        return found


@dataclass(slots=True)
class _Circuit:
    state: str = CLOSED
    failures: int = 0
    until: float = 0.0
    probe_until: float = 0.0


class MemoryCircuitBreaker:
    """The same rules within one process (the in-process path and tests without Redis)."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_s: float = 30.0,
        probe_s: float = 150.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._threshold = failure_threshold
        self._open_s = open_s
        self._probe_s = probe_s
        self._clock = clock
        self._circuits: dict[tuple[str, str], _Circuit] = {}
        self._lock = threading.Lock()

    def _get(self, provider: str, model: str) -> _Circuit:
        return self._circuits.setdefault((provider, model), _Circuit())

    def peek(self, provider: str, model: str) -> Verdict:
        return self._ask(provider, model, take=False)

    def allow(self, provider: str, model: str) -> Verdict:
        return self._ask(provider, model, take=True)

    def _ask(self, provider: str, model: str, *, take: bool) -> Verdict:
        with self._lock:
            c, now = self._get(provider, model), self._clock()
            if c.state == CLOSED:
                return Verdict(True, CLOSED)
            if c.state == OPEN and now < c.until:
                return Verdict(False, OPEN, datetime.fromtimestamp(c.until, UTC))
            if now < c.probe_until:
                wait = now + PROBE_WAIT_MS / 1000
                return Verdict(False, HALF_OPEN, datetime.fromtimestamp(wait, UTC))
            if take:
                c.state, c.probe_until = HALF_OPEN, now + self._probe_s
            return Verdict(True, HALF_OPEN)

    def failure(self, provider: str, model: str) -> None:
        with self._lock:
            c = self._get(provider, model)
            before = c.state
            c.failures += 1
            if before == HALF_OPEN or (before == CLOSED and c.failures >= self._threshold):
                c.state, c.until, c.failures, c.probe_until = (
                    OPEN,
                    self._clock() + self._open_s,
                    0,
                    0.0,
                )
        _changed(provider, model, before, c.state)

    def success(self, provider: str, model: str) -> str:
        with self._lock:
            c = self._get(provider, model)
            before = c.state
            c.state, c.failures, c.probe_until = CLOSED, 0, 0.0
        _changed(provider, model, before, CLOSED)
        return before

    def state(self, provider: str, model: str) -> str:
        with self._lock:
            return self._get(provider, model).state
