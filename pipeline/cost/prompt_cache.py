"""Prompt caching only where it pays.

Marking a prefix for the provider's cache costs a write premium (+25% on those tokens) and pays
back only when the same prefix is read again within the cache's lifetime (5 minutes, renewed
by each read). Below the model's minimum cacheable length nothing is cached at all. So a call's
prefix is marked when it is long enough and either the cache is warm (a marked call with this
prefix ran within the lifetime) or the recent rate of calls with this prefix predicts enough
reads in the next lifetime to beat the premium. Calls are counted per prefix (provider, model,
schema and version) across all workers in Redis.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from decimal import Decimal
from typing import Protocol

import redis

from pipeline.costing import BATCH_TIER, ModelPrice
from pipeline.domain import Usage

log = logging.getLogger(__name__)

CACHE_LIFETIME_S = 300.0  # Anthropic's default ("5m") ephemeral cache
_MILLION = Decimal(1_000_000)


class PrefixActivity(Protocol):
    def recent_calls(self, key: str) -> int:
        """Calls with this prefix within the cache lifetime."""
        ...

    def warm(self, key: str) -> bool:
        """A marked call with this prefix ran within the cache lifetime."""
        ...

    def note(self, key: str, marked: bool) -> None: ...


def worth_marking(
    price: ModelPrice | None, prefix_tokens: int, recent_calls: int, warm: bool
) -> bool:
    """Whether marking this call's prefix is expected to save money."""
    if price is None or price.min_cache_tokens is None:
        return False  # no explicit prompt caching for this model
    if prefix_tokens < price.min_cache_tokens:
        return False  # silently not cached: marking would only mislead the reports
    if warm:
        return True  # a read at the cache-read price, and it renews the lifetime
    premium = price.cache_write - price.input
    saving_per_read = price.input - price.cache_read
    if saving_per_read <= 0:
        return False
    # As many calls as in the last lifetime are expected in the next one.
    return recent_calls * saving_per_read > premium


def prompt_cache_saving(price: ModelPrice, usage: Usage) -> Decimal:
    """What caching saved on one call: reads at the cache price instead of the input price,
    less the premium paid on cache writes (negative for a write nobody read)."""
    saved = (
        usage.cache_read_input_tokens * (price.input - price.cache_read)
        - usage.cache_creation_input_tokens * (price.cache_write - price.input)
    ) / _MILLION
    if usage.service_tier == BATCH_TIER:
        saved *= price.batch_discount
    return saved.quantize(Decimal("0.00000001"))


class MemoryActivity:
    """Per process (the in-process path, tests)."""

    def __init__(self, lifetime_s: float = CACHE_LIFETIME_S) -> None:
        self._lifetime = lifetime_s
        self._calls: dict[str, deque[float]] = {}
        self._marked: dict[str, float] = {}
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] < now - self._lifetime:
            calls.popleft()
        return calls

    def recent_calls(self, key: str) -> int:
        with self._lock:
            return len(self._trim(key, time.time()))

    def warm(self, key: str) -> bool:
        with self._lock:
            return time.time() - self._marked.get(key, float("-inf")) < self._lifetime

    def note(self, key: str, marked: bool) -> None:
        now = time.time()
        with self._lock:
            self._trim(key, now).append(now)
            if marked:
                self._marked[key] = now


class RedisActivity:
    """Shared by every worker: a sorted set of recent call times and a warm flag per prefix.
    A Redis error reads as "no activity" (no marking: the cheaper mistake)."""

    def __init__(
        self,
        client: redis.Redis,
        lifetime_s: float = CACHE_LIFETIME_S,
        prefix: str = "pagemill:prompt-cache",
    ) -> None:
        self._client = client
        self._lifetime_ms = int(lifetime_s * 1000)
        self._prefix = prefix

    def _calls_key(self, key: str) -> str:
        return f"{self._prefix}:{{{key}}}:calls"

    def _warm_key(self, key: str) -> str:
        return f"{self._prefix}:{{{key}}}:warm"

    def recent_calls(self, key: str) -> int:
        now = int(time.time() * 1000)
        try:
            pipe = self._client.pipeline()
            pipe.zremrangebyscore(self._calls_key(key), 0, now - self._lifetime_ms)
            pipe.zcard(self._calls_key(key))
            return int(pipe.execute()[1])
        except redis.RedisError as exc:
            log.warning("prompt-cache activity unavailable: %s", exc)
            return 0

    def warm(self, key: str) -> bool:
        try:
            return bool(self._client.exists(self._warm_key(key)))
        except redis.RedisError:
            return False

    def note(self, key: str, marked: bool) -> None:
        now = int(time.time() * 1000)
        try:
            pipe = self._client.pipeline()
            pipe.zadd(self._calls_key(key), {f"{now}:{uuid.uuid4().hex[:8]}": now})
            pipe.pexpire(self._calls_key(key), self._lifetime_ms)
            if marked:
                pipe.set(self._warm_key(key), "1", px=self._lifetime_ms)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("prompt-cache activity not recorded: %s", exc)
