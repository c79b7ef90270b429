"""Provider rate limits shared by every worker through Redis: requests, tokens, calls in flight."""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Protocol

import redis

from pipeline.domain import PageContent, Usage
from pipeline.errors import ErrorCategory, TransientError

log = logging.getLogger(__name__)

WILDCARD = "*"

LimitTable = Mapping[tuple[str, str], "RateLimits"]

_SPEC_NAMES = {
    "rpm": "requests_per_minute",
    "itpm": "input_tokens_per_minute",
    "otpm": "output_tokens_per_minute",
    "inflight": "max_in_flight",
}

# Anthropic's documented image cost is about width*height/750 tokens, and it scales images
# down to ~1.15 megapixels first, so one image never costs much more than ~1600 tokens.
_PIXELS_PER_TOKEN = 750
_MAX_IMAGE_TOKENS = 1600
_CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Limits for one provider and model; None means unlimited."""

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name} must be a positive integer or None, not {value!r}")

    @property
    def unlimited(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


UNLIMITED = RateLimits()


def parse_limits(spec: str) -> dict[tuple[str, str], RateLimits]:
    """Parse `provider:model=rpm:50,itpm:30000,otpm:8000,inflight:8;provider:*=inflight:64`.

    The model may be `*` (any model of that provider without its own entry) and may itself
    contain colons (`provider:name:tag`): only the first colon splits provider from model.
    An empty spec means no limits at all.
    """
    table: dict[tuple[str, str], RateLimits] = {}
    for raw_entry in spec.split(";"):
        entry = raw_entry.strip()
        if not entry:
            continue
        target, sep, body = entry.partition("=")
        if not sep:
            raise ValueError(
                f"rate limit entry {entry!r}: expected provider:model=name:value[,name:value...]"
            )
        provider, sep, model = (part.strip() for part in target.partition(":"))
        if not sep or not provider or not model:
            raise ValueError(
                f"rate limit entry {entry!r}: {target.strip()!r} must be provider:model "
                "(model may be *)"
            )
        if (provider, model) in table:
            raise ValueError(f"rate limit entry {entry!r}: {provider}:{model} is given twice")
        values: dict[str, int] = {}
        for raw_item in body.split(","):
            item = raw_item.strip()
            name, sep, value = (part.strip() for part in item.partition(":"))
            if not sep or not name or not value:
                raise ValueError(
                    f"rate limit entry {entry!r}: {item!r} must be name:value, "
                    f"name one of {', '.join(_SPEC_NAMES)}"
                )
            field_name = _SPEC_NAMES.get(name.lower())
            if field_name is None:
                raise ValueError(
                    f"rate limit entry {entry!r}: unknown limit {name!r}; "
                    f"use {', '.join(_SPEC_NAMES)}"
                )
            if field_name in values:
                raise ValueError(f"rate limit entry {entry!r}: {name} is given twice")
            try:
                number = int(value)
            except ValueError:
                raise ValueError(
                    f"rate limit entry {entry!r}: {name} must be an integer, not {value!r}"
                ) from None
            if number < 1:
                raise ValueError(
                    f"rate limit entry {entry!r}: {name} must be at least 1 "
                    "(leave it out for no limit)"
                )
            values[field_name] = number
        table[(provider, model)] = RateLimits(**values)
    return table


def limits_for(table: LimitTable, provider: str, model: str) -> RateLimits:
    """The model's own limits, else the provider's `*` entry, else unlimited.

    A `*` entry gives each model its own budget of that size; it is not one budget shared by
    all the provider's models.
    """
    found = table.get((provider, model))
    if found is None:
        found = table.get((provider, WILDCARD))
    return found if found is not None else UNLIMITED


def estimate_input_tokens(pages: Sequence[PageContent], prompt_chars: int) -> int:
    """Rough input tokens of one call: each page image plus its text layer, plus the prompt.

    Only an estimate to reserve budget with; `release` corrects it with the real usage.
    """
    tokens = math.ceil(max(prompt_chars, 0) / _CHARS_PER_TOKEN)
    for page in pages:
        if page.pixel_width > 0 and page.pixel_height > 0:
            pixels = page.pixel_width * page.pixel_height
            tokens += min(math.ceil(pixels / _PIXELS_PER_TOKEN), _MAX_IMAGE_TOKENS)
        tokens += math.ceil(len(page.text) / _CHARS_PER_TOKEN)
    return tokens


@dataclass(slots=True)
class Permit:
    """Leave to make one provider call; hand it back with `release` when the call is over."""

    id: str
    provider: str
    model: str
    limits: RateLimits
    input_tokens: int  # what was charged against the budget, to correct on release
    output_tokens: int
    waited_s: float = 0.0
    actual: Usage | None = None  # set inside `limited` so the exit can correct the budget
    released: bool = False


class RateLimiter(Protocol):
    def acquire(
        self, provider: str, model: str, est_input_tokens: int, est_output_tokens: int
    ) -> Permit: ...

    def release(self, permit: Permit, actual: Usage | None) -> None: ...

    def cooldown(self, provider: str, model: str, seconds: float) -> None: ...


class NoRateLimiter:
    """The limiter when none is configured, and for the in-process path: never waits."""

    def acquire(
        self, provider: str, model: str, est_input_tokens: int, est_output_tokens: int
    ) -> Permit:
        return Permit(
            id=uuid.uuid4().hex,
            provider=provider,
            model=model,
            limits=UNLIMITED,
            input_tokens=est_input_tokens,
            output_tokens=est_output_tokens,
        )

    def release(self, permit: Permit, actual: Usage | None) -> None:
        permit.released = True

    def cooldown(self, provider: str, model: str, seconds: float) -> None:
        return None


# All times are Redis server milliseconds (TIME), so that workers whose clocks disagree still
# share one budget. Each budget is a GCRA token bucket: KEY holds the "theoretical arrival
# time" (TAT) at which the bucket is full again; a cost of c units moves it c*window/limit ms
# later, and the request fits while TAT stays within one window of now.
_BUCKET_LUA = """
local function num(v)
  if v then return tonumber(v) end
  return nil
end

local function put(key, value, now)
  if value <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%.3f', value),
               'PX', string.format('%d', math.ceil(value - now) + 1000))
  end
end

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
"""

# KEYS: rpm, itpm, otpm, inflight (zset id -> lease expiry), cooldown (not-before).
# ARGV: window_ms, rpm, itpm, otpm, inflight (0 = unlimited), input cost, output cost,
#       permit id, lease_ms.
# Returns {allowed, rate wait ms, inflight full, reasons, charged input, charged output}.
_ACQUIRE_LUA = (
    _BUCKET_LUA
    + """
local now = server_ms()
local window = tonumber(ARGV[1])
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local inflight = tonumber(ARGV[5])
local costs = {1, tonumber(ARGV[6]), tonumber(ARGV[7])}
local names = {'rpm', 'itpm', 'otpm'}
local wait = 0
local reasons = {}
local full = 0
local charged = {0, 0, 0}
local new_tat = {}

local not_before = num(redis.call('GET', KEYS[5]))
if not_before and not_before > now then
  wait = not_before - now
  table.insert(reasons, 'cooldown')
end

for i = 1, 3 do
  local limit, cost = limits[i], costs[i]
  -- A single call larger than the whole budget could never fit; let it through once the
  -- bucket is full instead of blocking it forever (the provider will judge it).
  if limit > 0 and cost > limit then cost = limit end
  charged[i] = cost
  if limit > 0 and cost > 0 then
    local tat = num(redis.call('GET', KEYS[i])) or now
    if tat < now then tat = now end
    local nt = tat + cost * window / limit
    local over = nt - now - window
    -- The tolerance absorbs float rounding of window/limit (e.g. 7 * 60000/7 > 60000).
    if over > 0.001 then
      if over > wait then wait = over end
      table.insert(reasons, names[i])
    else
      new_tat[i] = nt
    end
  end
end

if inflight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%.3f', now))
  if redis.call('ZCARD', KEYS[4]) >= inflight then
    full = 1
    table.insert(reasons, 'inflight')
  end
end

if #reasons > 0 then
  return {0, string.format('%.3f', wait), full, table.concat(reasons, ','), 0, 0}
end

for i = 1, 3 do
  if new_tat[i] then put(KEYS[i], new_tat[i], now) end
end
if inflight > 0 then
  local lease = tonumber(ARGV[9])
  redis.call('ZADD', KEYS[4], string.format('%.3f', now + lease), ARGV[8])
  -- Every member expires within one lease of the newest, so the set may go with it.
  redis.call('PEXPIRE', KEYS[4], string.format('%d', math.ceil(lease) + 1000))
end
return {1, '0', 0, '', charged[2], charged[3]}
"""
)

# KEYS: itpm, otpm, inflight. ARGV: window_ms, itpm, otpm, permit id, input delta, output delta.
_RELEASE_LUA = (
    _BUCKET_LUA
    + """
local now = server_ms()
local window = tonumber(ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[4])
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local deltas = {tonumber(ARGV[5]), tonumber(ARGV[6])}
for i = 1, 2 do
  if limits[i] > 0 and deltas[i] ~= 0 then
    local tat = num(redis.call('GET', KEYS[i])) or now
    if tat < now then tat = now end
    -- A refund can at most refill the bucket (put deletes a TAT in the past); extra usage
    -- may overdraw it, which later callers then wait out.
    put(KEYS[i], tat + deltas[i] * window / limits[i], now)
  end
end
return 1
"""
)

# KEYS: cooldown. ARGV: seconds. Only ever moves the not-before time later.
_COOLDOWN_LUA = (
    _BUCKET_LUA
    + """
local now = server_ms()
local until_ms = now + tonumber(ARGV[1]) * 1000
local current = num(redis.call('GET', KEYS[1]))
if current and current >= until_ms then return 0 end
put(KEYS[1], until_ms, now)
return 1
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRateLimiter:
    """Rate limits per provider and model, shared by every process that uses the same Redis.

    Requests, input tokens and output tokens per minute are token buckets (GCRA): a bucket
    holds one window's budget and refills continuously at limit/window. That is the algorithm
    Anthropic documents for its own limits, so our budget drains and refills the way the
    provider's does, while a fixed per-minute bucket would allow bursts at window edges and a
    sliding log would cost memory per request. Each bucket is one Redis key, so checking and
    charging all of them, the in-flight set and the cooldown is one atomic Lua script that
    reads the clock from Redis (TIME), not from the workers.

    In-flight calls are a sorted set of permit ids scored by lease expiry: a worker killed
    mid-call loses its slot after `lease_s` by itself. `lease_s` must outlast the longest
    provider call, or a slow call's slot is handed to someone else.

    `acquire` waits up to `max_wait_s` (the script says how long a rate wait is; a full
    in-flight set is polled every `poll_s`) and then raises a transient
    PROVIDER_RATE_LIMITED error, so that the task is rescheduled instead of holding a worker.
    A wait that already exceeds what is left of `max_wait_s` raises at once. Waiters are not
    queued: under contention any waiter may win, there is no fairness.

    Estimates are charged up front and corrected by `release` with the actual usage. Input
    usage includes cache-read tokens unless `count_cache_reads` is False (current Anthropic
    models do not count cache reads against ITPM).
    """

    def __init__(
        self,
        client: redis.Redis,
        limits: LimitTable,
        *,
        prefix: str = "pagemill:ratelimit",
        max_wait_s: float = 30.0,
        lease_s: float = 600.0,
        window_s: float = 60.0,
        poll_s: float = 0.25,
        max_cooldown_s: float = 300.0,
        count_cache_reads: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_wait_s < 0 or lease_s <= 0 or window_s <= 0 or poll_s <= 0 or max_cooldown_s < 0:
            raise ValueError(
                "rate limiter: max_wait_s and max_cooldown_s must be >= 0, "
                "lease_s, window_s and poll_s > 0"
            )
        self._client = client
        self._limits = dict(limits)
        self._prefix = prefix
        self._max_wait_s = max_wait_s
        self._lease_ms = lease_s * 1000.0
        self._window_ms = window_s * 1000.0
        self._poll_s = poll_s
        self._max_cooldown_s = max_cooldown_s
        self._count_cache_reads = count_cache_reads
        self._sleep = sleep
        self._acquire_script = client.register_script(_ACQUIRE_LUA)
        self._release_script = client.register_script(_RELEASE_LUA)
        self._cooldown_script = client.register_script(_COOLDOWN_LUA)

    def _key(self, provider: str, model: str, name: str) -> str:
        # The hash tag keeps one model's keys in one cluster slot, as a script needs.
        return f"{self._prefix}:{{{provider}:{model}}}:{name}"

    def acquire(
        self, provider: str, model: str, est_input_tokens: int, est_output_tokens: int
    ) -> Permit:
        limits = limits_for(self._limits, provider, model)
        permit_id = uuid.uuid4().hex
        keys = [
            self._key(provider, model, name)
            for name in ("rpm", "itpm", "otpm", "inflight", "cooldown")
        ]
        args: list[str | int] = [
            repr(self._window_ms),
            limits.requests_per_minute or 0,
            limits.input_tokens_per_minute or 0,
            limits.output_tokens_per_minute or 0,
            limits.max_in_flight or 0,
            max(est_input_tokens, 0),
            max(est_output_tokens, 0),
            permit_id,
            repr(self._lease_ms),
        ]
        started = time.monotonic()
        deadline = started + self._max_wait_s
        while True:
            try:
                reply = self._acquire_script(keys=keys, args=args)
            except redis.RedisError as exc:
                if limits.unlimited:
                    # Only the shared 429 cooldown is at stake: calling without it beats not
                    # calling at all while Redis is down.
                    log.debug("rate limiter unavailable, calling without the cooldown: %s", exc)
                    return Permit(
                        id=permit_id,
                        provider=provider,
                        model=model,
                        limits=limits,
                        input_tokens=0,
                        output_tokens=0,
                    )
                raise TransientError(
                    ErrorCategory.BROKER_UNAVAILABLE, f"rate limiter unavailable: {exc}"
                ) from exc
            allowed, wait_ms, inflight_full, reasons, charged_in, charged_out = reply
            if int(allowed):
                return Permit(
                    id=permit_id,
                    provider=provider,
                    model=model,
                    limits=limits,
                    input_tokens=int(charged_in),
                    output_tokens=int(charged_out),
                    waited_s=time.monotonic() - started,
                )
            rate_wait_s = float(_text(wait_ms)) / 1000.0
            remaining = deadline - time.monotonic()
            if remaining <= 0 or rate_wait_s > remaining:
                # A known wait past the deadline cannot end well here: free the worker now.
                suggested = rate_wait_s
                if int(inflight_full):
                    # Nobody knows when a slot frees; slots that did not turn over while we
                    # waited are unlikely to do so much sooner.
                    suggested = max(suggested, self._max_wait_s, self._poll_s)
                raise TransientError(
                    ErrorCategory.PROVIDER_RATE_LIMITED,
                    f"{provider}:{model} over its shared rate limit ({_text(reasons)}); "
                    f"waited {time.monotonic() - started:.1f}s",
                    retry_after_s=round(suggested, 3),
                )
            pause = max(rate_wait_s, self._poll_s if int(inflight_full) else 0.0)
            # Jitter, so that the workers a cooldown held back do not all return at once.
            pause += random.uniform(0, 0.1 * pause + 0.005)
            self._sleep(min(pause, max(remaining, 0.0)))

    def release(self, permit: Permit, actual: Usage | None) -> None:
        """Free the permit's in-flight slot and correct its token estimate by the actual usage.

        `actual` None (the call failed, usage unknown) keeps the estimate as charged. Never
        raises: the provider call is over, and a slot Redis forgets expires with its lease.
        """
        if permit.released:
            return
        permit.released = True
        limits = permit.limits
        delta_in = delta_out = 0
        if actual is not None:
            used_in = actual.input_tokens + actual.cache_creation_input_tokens
            if self._count_cache_reads:
                used_in += actual.cache_read_input_tokens
            delta_in = used_in - permit.input_tokens
            delta_out = actual.output_tokens - permit.output_tokens
        if limits.max_in_flight is None and not (
            (delta_in and limits.input_tokens_per_minute)
            or (delta_out and limits.output_tokens_per_minute)
        ):
            return
        keys = [
            self._key(permit.provider, permit.model, name) for name in ("itpm", "otpm", "inflight")
        ]
        args: list[str | int] = [
            repr(self._window_ms),
            limits.input_tokens_per_minute or 0,
            limits.output_tokens_per_minute or 0,
            permit.id,
            delta_in,
            delta_out,
        ]
        try:
            self._release_script(keys=keys, args=args)
        except redis.RedisError as exc:
            log.warning("rate limiter: could not release permit %s: %s", permit.id, exc)

    def cooldown(self, provider: str, model: str, seconds: float) -> None:
        """Hold back every worker's calls to this model for `seconds` (capped at
        `max_cooldown_s`); an earlier, longer cooldown is kept. Never raises."""
        seconds = min(max(seconds, 0.0), self._max_cooldown_s)
        if seconds <= 0:
            return
        try:
            self._cooldown_script(
                keys=[self._key(provider, model, "cooldown")], args=[repr(seconds)]
            )
        except redis.RedisError as exc:
            log.warning("rate limiter: could not set cooldown for %s:%s: %s", provider, model, exc)


@contextmanager
def limited(
    limiter: RateLimiter,
    provider: str,
    model: str,
    est_input_tokens: int,
    est_output_tokens: int,
    *,
    default_cooldown_s: float = 5.0,
) -> Iterator[Permit]:
    """Hold a permit for one provider call; set `permit.actual` to the reply's usage.

    A PROVIDER_RATE_LIMITED error from the call (a 429) starts a shared cooldown of its
    retry-after, or `default_cooldown_s` when the server gave none, so that every worker
    backs off, not only the one that was told.
    """
    permit = limiter.acquire(provider, model, est_input_tokens, est_output_tokens)
    try:
        yield permit
    except TransientError as exc:
        if exc.category is ErrorCategory.PROVIDER_RATE_LIMITED:
            wait = exc.retry_after_s
            limiter.cooldown(provider, model, wait if wait is not None else default_cooldown_s)
        raise
    finally:
        limiter.release(permit, permit.actual)


def make_rate_limiter(
    spec: str,
    redis_url: str,
    *,
    prefix: str = "pagemill:ratelimit",
    max_wait_s: float = 30.0,
    lease_s: float = 600.0,
) -> RateLimiter:
    """A RedisRateLimiter for `spec` (see `parse_limits`; empty: no limits, only the cooldown).

    Call it at start-up, not at import: it opens a Redis connection pool.
    """
    table = parse_limits(spec)
    # Even without limits the Redis limiter is used: a 429 seen by one worker then holds back
    # every worker's calls to that model (the shared cooldown), which needs no configuration.
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
    return RedisRateLimiter(client, table, prefix=prefix, max_wait_s=max_wait_s, lease_s=lease_s)
