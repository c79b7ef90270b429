"""Shared rate limits against a real Redis: several limiter instances stand in for workers."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from pipeline.domain import PageContent, Usage
from pipeline.errors import ErrorCategory, TransientError
from pipeline.ratelimit import (
    NoRateLimiter,
    RateLimits,
    RedisRateLimiter,
    estimate_input_tokens,
    limited,
    limits_for,
    make_rate_limiter,
    parse_limits,
)

REDIS_URL = os.environ.get("PAGEMILL_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")

MakeLimiter = Callable[..., RedisRateLimiter]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        pytest.skip(f"Redis is not reachable at the test URL: {exc}")
    yield client
    client.close()


@pytest.fixture
def make(client: redis.Redis) -> Iterator[MakeLimiter]:
    """Limiters sharing one key prefix of their own, as the workers of one deployment do."""
    prefix = f"test-ratelimit-{uuid.uuid4().hex}"

    def build(spec: str, **options: Any) -> RedisRateLimiter:
        return RedisRateLimiter(client, parse_limits(spec), prefix=prefix, **options)

    yield build
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def _throttled(call: Callable[[], object]) -> TransientError:
    with pytest.raises(TransientError) as caught:
        call()
    assert caught.value.category is ErrorCategory.PROVIDER_RATE_LIMITED
    return caught.value


# --- requests and tokens per minute -------------------------------------------------------


def test_rpm_is_shared_between_workers(make: MakeLimiter) -> None:
    spec = "anthropic:m=rpm:3"
    first = make(spec, window_s=3.0, max_wait_s=0)
    second = make(spec, window_s=3.0, max_wait_s=0)
    for limiter in (first, second, first):
        limiter.acquire("anthropic", "m", 0, 0)

    error = _throttled(lambda: second.acquire("anthropic", "m", 0, 0))
    assert "rpm" in str(error)
    # 3 per 3 s refills one request a second.
    assert error.retry_after_s is not None
    assert 0.5 < error.retry_after_s <= 1.0

    patient = make(spec, window_s=3.0, max_wait_s=3.0)
    permit = patient.acquire("anthropic", "m", 0, 0)
    assert permit.waited_s > 0.5


def test_a_wait_past_max_wait_raises_at_once(make: MakeLimiter) -> None:
    slept: list[float] = []
    limiter = make("anthropic:m=rpm:1", max_wait_s=5.0, sleep=slept.append)
    limiter.acquire("anthropic", "m", 0, 0)
    error = _throttled(lambda: limiter.acquire("anthropic", "m", 0, 0))
    assert slept == []  # no point sleeping 5 s for a 60 s wait: it said so at once
    assert error.retry_after_s is not None
    assert 55 < error.retry_after_s <= 60


def test_other_models_and_providers_have_their_own_budget(make: MakeLimiter) -> None:
    limiter = make("anthropic:*=rpm:1", max_wait_s=0)
    limiter.acquire("anthropic", "a", 0, 0)
    limiter.acquire("anthropic", "b", 0, 0)  # `*` is a budget per model, not one for all
    for _ in range(5):
        limiter.acquire("openai_compat", "a", 0, 0)  # no entry: unlimited
    _throttled(lambda: limiter.acquire("anthropic", "a", 0, 0))


def test_input_tokens_are_refunded_on_release(make: MakeLimiter) -> None:
    first = make("anthropic:m=itpm:1000", window_s=10.0, max_wait_s=0)
    second = make("anthropic:m=itpm:1000", window_s=10.0, max_wait_s=0)
    permit = first.acquire("anthropic", "m", 600, 0)
    error = _throttled(lambda: second.acquire("anthropic", "m", 600, 0))
    assert "itpm" in str(error)

    # Cache tokens count as input: 100 used of the 600 estimated.
    first.release(
        permit, Usage(input_tokens=50, cache_read_input_tokens=30, cache_creation_input_tokens=20)
    )
    second.acquire("anthropic", "m", 600, 0)  # 100 + 600 fit in 1000
    _throttled(lambda: second.acquire("anthropic", "m", 400, 0))


def test_output_overrun_is_charged_on_release(make: MakeLimiter) -> None:
    limiter = make("anthropic:m=otpm:1000", window_s=10.0, max_wait_s=0)
    permit = limiter.acquire("anthropic", "m", 0, 100)
    limiter.release(permit, Usage(output_tokens=900))
    error = _throttled(lambda: limiter.acquire("anthropic", "m", 0, 200))
    assert "otpm" in str(error)
    limiter.acquire("anthropic", "m", 0, 50)


def test_release_without_usage_keeps_the_estimate_and_happens_once(make: MakeLimiter) -> None:
    limiter = make("anthropic:m=itpm:1000", window_s=10.0, max_wait_s=0)
    permit = limiter.acquire("anthropic", "m", 800, 0)
    limiter.release(permit, None)
    limiter.release(permit, Usage(input_tokens=0))  # a second release changes nothing
    _throttled(lambda: limiter.acquire("anthropic", "m", 300, 0))


def test_cache_reads_can_be_left_out_of_input(make: MakeLimiter) -> None:
    limiter = make("anthropic:m=itpm:1000", window_s=10.0, max_wait_s=0, count_cache_reads=False)
    permit = limiter.acquire("anthropic", "m", 900, 0)
    limiter.release(permit, Usage(input_tokens=100, cache_read_input_tokens=5000))
    limiter.acquire("anthropic", "m", 850, 0)


def test_a_call_bigger_than_the_budget_passes_alone(make: MakeLimiter) -> None:
    limiter = make("anthropic:m=itpm:1000", window_s=10.0, max_wait_s=0)
    permit = limiter.acquire("anthropic", "m", 5000, 0)
    assert permit.input_tokens == 1000  # charged the whole budget, not blocked forever
    _throttled(lambda: limiter.acquire("anthropic", "m", 1, 0))


# --- calls in flight ------------------------------------------------------------------------


def test_in_flight_cap_holds_across_threads_and_instances(make: MakeLimiter) -> None:
    spec = "openai_compat:*=inflight:4"
    workers = [make(spec, max_wait_s=10.0, poll_s=0.01) for _ in range(2)]
    lock = threading.Lock()
    running = 0
    peak = 0
    done = 0
    errors: list[BaseException] = []

    def call(n: int) -> None:
        nonlocal running, peak, done
        limiter = workers[n % 2]
        try:
            permit = limiter.acquire("openai_compat", "qwen", 100, 10)
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.05)
            with lock:
                running -= 1
                done += 1
            limiter.release(permit, Usage(input_tokens=90, output_tokens=12))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert errors == []
    assert done == 20
    assert peak == 4


def test_permits_of_a_killed_worker_expire_with_their_lease(make: MakeLimiter) -> None:
    spec = "anthropic:m=inflight:1"
    killed = make(spec, lease_s=0.5)
    killed.acquire("anthropic", "m", 0, 0)  # never released: the process "died"

    error = _throttled(lambda: make(spec, max_wait_s=0).acquire("anthropic", "m", 0, 0))
    assert "inflight" in str(error)

    permit = make(spec, max_wait_s=3.0, poll_s=0.05).acquire("anthropic", "m", 0, 0)
    assert permit.waited_s > 0.3  # until the dead worker's lease ran out


def test_waiting_for_a_slot_gives_up_after_max_wait(make: MakeLimiter) -> None:
    spec = "anthropic:m=inflight:1"
    make(spec).acquire("anthropic", "m", 0, 0)
    waiter = make(spec, max_wait_s=0.3, poll_s=0.05)
    started = time.monotonic()
    error = _throttled(lambda: waiter.acquire("anthropic", "m", 0, 0))
    assert time.monotonic() - started >= 0.3  # it waited its max_wait_s before giving up
    assert error.retry_after_s == pytest.approx(0.3)


# --- shared cooldown after a 429 ----------------------------------------------------------


def test_cooldown_from_one_worker_holds_back_another(make: MakeLimiter) -> None:
    told = make("")  # applies to models without configured limits too
    told.cooldown("anthropic", "m", 0.6)

    error = _throttled(lambda: make("", max_wait_s=0).acquire("anthropic", "m", 0, 0))
    assert "cooldown" in str(error)
    assert error.retry_after_s is not None
    assert 0.3 < error.retry_after_s <= 0.6

    permit = make("", max_wait_s=2.0).acquire("anthropic", "m", 0, 0)
    assert permit.waited_s > 0.3


def test_cooldown_only_ever_extends_and_is_capped(make: MakeLimiter) -> None:
    limiter = make("", max_wait_s=0, max_cooldown_s=30.0)
    limiter.cooldown("anthropic", "m", 3600)  # capped to 30 s
    limiter.cooldown("anthropic", "m", 0.1)  # shorter: ignored
    error = _throttled(lambda: limiter.acquire("anthropic", "m", 0, 0))
    assert error.retry_after_s is not None
    assert 25 < error.retry_after_s <= 30


def test_limited_releases_and_shares_a_429(make: MakeLimiter) -> None:
    limiter = make("anthropic:m=inflight:1,itpm:1000", window_s=10.0, max_wait_s=0)
    with limited(limiter, "anthropic", "m", 900, 0) as permit:
        permit.actual = Usage(input_tokens=100)
    # Slot freed and 800 tokens refunded.
    with limited(limiter, "anthropic", "m", 800, 0):
        pass

    with pytest.raises(TransientError), limited(limiter, "anthropic", "m", 0, 0):
        raise TransientError(ErrorCategory.PROVIDER_RATE_LIMITED, "429", retry_after_s=20)
    error = _throttled(lambda: limiter.acquire("anthropic", "m", 0, 0))
    assert "cooldown" in str(error)
    assert "inflight" not in str(error)


def test_a_429_holds_back_every_worker_with_no_limits_configured(client: redis.Redis) -> None:
    # PAGEMILL_RATE_LIMITS empty, as by default: the cooldown still needs no configuration.
    prefix = f"test-ratelimit-{uuid.uuid4().hex}"
    told, other = (make_rate_limiter("", REDIS_URL, prefix=prefix, max_wait_s=0) for _ in range(2))
    try:
        with pytest.raises(TransientError), limited(told, "anthropic", "m", 0, 0):
            raise TransientError(ErrorCategory.PROVIDER_RATE_LIMITED, "429", retry_after_s=20)
        error = _throttled(lambda: other.acquire("anthropic", "m", 0, 0))
        assert "cooldown" in str(error)
        assert error.retry_after_s is not None and error.retry_after_s > 15
        other.acquire("anthropic", "another-model", 0, 0)  # one model's 429 is its own
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)


def test_without_limits_a_redis_that_is_down_only_costs_the_cooldown() -> None:
    # Nothing to enforce but the cooldown: calls go on rather than wait for Redis.
    limiter = make_rate_limiter("", "redis://127.0.0.1:1/0", max_wait_s=0)
    with limited(limiter, "anthropic", "m", 100, 100) as permit:
        permit.actual = Usage(input_tokens=1)
    assert permit.released


# --- no limiter, parsing, estimates -------------------------------------------------------


def test_no_rate_limiter_never_waits() -> None:
    limiter = NoRateLimiter()
    with limited(limiter, "anthropic", "m", 10**9, 10**9) as permit:
        permit.actual = Usage(input_tokens=1)
    limiter.cooldown("anthropic", "m", 60)
    assert permit.released
    limiter.acquire("anthropic", "m", 1, 1)


def test_parse_limits() -> None:
    table = parse_limits(
        " anthropic:claude-sonnet-4-6=rpm:50, itpm:30000,otpm:8000,inflight:8 ;"
        "openai_compat:*=inflight:64;ollama:llava:13b=RPM:5;"
    )
    assert table == {
        ("anthropic", "claude-sonnet-4-6"): RateLimits(
            requests_per_minute=50,
            input_tokens_per_minute=30000,
            output_tokens_per_minute=8000,
            max_in_flight=8,
        ),
        ("openai_compat", "*"): RateLimits(max_in_flight=64),
        ("ollama", "llava:13b"): RateLimits(requests_per_minute=5),
    }
    assert parse_limits("") == {}
    assert parse_limits("  ; ") == {}

    assert limits_for(table, "openai_compat", "qwen") == RateLimits(max_in_flight=64)
    assert limits_for(table, "anthropic", "claude-sonnet-4-6").requests_per_minute == 50
    assert limits_for(table, "anthropic", "claude-haiku-4-5").unlimited


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("anthropic:m", "expected provider:model="),
        ("anthropic=rpm:5", "must be provider:model"),
        (":m=rpm:5", "must be provider:model"),
        ("anthropic:m=", "must be name:value"),
        ("anthropic:m=rpm", "must be name:value"),
        ("anthropic:m=rpm:5,", "must be name:value"),
        ("anthropic:m=rps:5", "unknown limit 'rps'"),
        ("anthropic:m=rpm:five", "must be an integer"),
        ("anthropic:m=rpm:2.5", "must be an integer"),
        ("anthropic:m=rpm:0", "at least 1"),
        ("anthropic:m=rpm:-3", "at least 1"),
        ("anthropic:m=rpm:5,rpm:6", "rpm is given twice"),
        ("anthropic:m=rpm:5;anthropic:m=itpm:6", "given twice"),
    ],
)
def test_parse_limits_rejects_bad_specs(spec: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="rate limit entry") as caught:
        parse_limits(spec)
    assert complaint in str(caught.value)


def test_rate_limits_reject_non_positive_values() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimits(requests_per_minute=0)


def _page(width: int, height: int, text: str = "") -> PageContent:
    return PageContent(
        index=0,
        width_pt=612,
        height_pt=792,
        image=b"img",
        media_type="image/png",
        pixel_width=width,
        pixel_height=height,
        render_dpi=150,
        image_sha256="0" * 64,
        text=text,
    )


def test_estimate_input_tokens() -> None:
    assert estimate_input_tokens([], 0) == 0
    assert estimate_input_tokens([], 401) == 101
    assert estimate_input_tokens([_page(750, 100)], 0) == 100
    assert estimate_input_tokens([_page(1568, 2000)], 0) == 1600  # capped per image
    pages = [_page(750, 100, text="x" * 40), _page(4000, 4000)]
    assert estimate_input_tokens(pages, 8) == 2 + 100 + 10 + 1600
