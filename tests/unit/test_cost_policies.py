"""Cost policies as rules: the image-token estimate, when prompt caching pays, the parsers of
the cost settings, and the circuit breaker's states."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.cost import config
from pipeline.cost.circuit import CLOSED, HALF_OPEN, OPEN, MemoryCircuitBreaker
from pipeline.cost.estimate import image_tokens
from pipeline.cost.prompt_cache import prompt_cache_saving, worth_marking
from pipeline.costing import ModelPrice
from pipeline.domain import ObjectRef, Usage
from pipeline.settings import SettingsError, load_settings

PRICE = ModelPrice(
    input=Decimal(3),
    output=Decimal(15),
    cache_write=Decimal("3.75"),
    cache_read=Decimal("0.30"),
    min_cache_tokens=1024,
)


def test_image_tokens_follow_the_providers_rule_after_its_downscaling() -> None:
    assert image_tokens(750, 100) == 100  # width * height / 750
    assert image_tokens(1000, 1000) == 1334
    # An A4 page at 1568 px is scaled down to ~1,600 tokens, not counted at 2,318.
    assert 1590 <= image_tokens(1109, 1568) <= 1600
    # However large the scan, it never costs more than the scaled-down image.
    assert image_tokens(6000, 8000) <= 1600
    assert image_tokens(0, 100) == 0


def test_prompt_caching_is_not_marked_below_the_models_minimum() -> None:
    assert not worth_marking(PRICE, 1023, recent_calls=50, warm=True)
    assert not worth_marking(None, 5000, recent_calls=50, warm=True)
    no_caching = PRICE.model_copy(update={"min_cache_tokens": None})
    assert not worth_marking(no_caching, 5000, recent_calls=50, warm=True)


def test_prompt_caching_pays_with_traffic_or_a_warm_cache_but_not_for_a_one_off_call() -> None:
    assert not worth_marking(PRICE, 2000, recent_calls=0, warm=False)  # premium for nothing
    assert worth_marking(PRICE, 2000, recent_calls=1, warm=False)
    assert worth_marking(PRICE, 2000, recent_calls=0, warm=True)
    # A provider whose cache reads are barely cheaper needs more traffic to beat the premium.
    thin = PRICE.model_copy(update={"cache_read": Decimal("2.90")})  # saves 0.10 per read
    assert not worth_marking(thin, 2000, recent_calls=7, warm=False)  # 0.70 < 0.75
    assert worth_marking(thin, 2000, recent_calls=8, warm=False)  # 0.80 > 0.75


def test_prompt_cache_saving_counts_reads_and_charges_the_write_premium() -> None:
    read = Usage(input_tokens=100, cache_read_input_tokens=1_000_000)
    assert prompt_cache_saving(PRICE, read) == Decimal("2.7")  # 3.00 - 0.30 per million
    write = Usage(input_tokens=100, cache_creation_input_tokens=1_000_000)
    assert prompt_cache_saving(PRICE, write) == Decimal("-0.75")  # a write nobody read
    batch_read = Usage(cache_read_input_tokens=1_000_000, service_tier="batch")
    discounted = PRICE.model_copy(update={"batch_discount": Decimal("0.5")})
    assert prompt_cache_saving(discounted, batch_read) == Decimal("1.35")


def test_cascade_failover_and_batch_routes_parse() -> None:
    cascades = config.parse_cascade("invoice=claude-haiku-4-5>claude-sonnet-4-6; *=a>b>c")
    assert config.cascade_for(cascades, "invoice") == ("claude-haiku-4-5", "claude-sonnet-4-6")
    assert config.cascade_for(cascades, "receipt") == ("a", "b", "c")
    assert config.cascade_for({}, "receipt") == ()

    failover = config.parse_failover(
        "anthropic:claude-sonnet-4-6=openai_compat;anthropic:*=openai_compat:qwen2.5vl:7b"
    )
    primary = config.failover_for(failover, "anthropic", "claude-sonnet-4-6")
    assert primary == config.Target("openai_compat")
    other = config.failover_for(failover, "anthropic", "claude-haiku-4-5")
    assert other == config.Target("openai_compat", "qwen2.5vl:7b")  # colons stay in the model
    assert config.failover_for(failover, "openai_compat", "x") is None

    routes = config.parse_batch_routes("archive/; s3://inbox/backfill/*")
    assert config.is_batch_route(routes, ObjectRef("any", "archive/2019/a.pdf"))
    assert config.is_batch_route(routes, ObjectRef("inbox", "backfill/b.pdf"))
    assert not config.is_batch_route(routes, ObjectRef("other", "backfill/b.pdf"))
    assert not config.is_batch_route(routes, ObjectRef("inbox", "urgent/c.pdf"))


def test_object_metadata_can_mark_an_upload_not_urgent() -> None:
    assert config.metadata_priority({"pagemill-priority": "batch"}) == "batch"
    assert config.metadata_priority({"X-Amz-Meta-Pagemill-Priority": "Low"}) == "batch"
    assert config.metadata_priority({"pagemill-priority": "urgent"}) == "urgent"
    assert config.metadata_priority({"other": "batch"}) is None


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("PAGEMILL_CASCADE", "invoice=claude-haiku-4-5", "cheap-model>stronger-model"),
        ("PAGEMILL_CASCADE", "invoice=a>a", "appears twice"),
        ("PAGEMILL_FAILOVER", "anthropic:x", "provider:model=provider"),
        ("PAGEMILL_FAILOVER", "anthropic:x=openai_compat:*", "must name a model or none"),
        ("PAGEMILL_BATCH_ROUTES", "a*b/", "only allowed at the end"),
    ],
)
def test_bad_cost_settings_stop_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value) and needle in str(info.value)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_sustained_failures_probes_once_and_closes_on_success() -> None:
    clock = _Clock()
    breaker = MemoryCircuitBreaker(failure_threshold=3, open_s=30, probe_s=60, clock=clock)
    for _ in range(2):
        breaker.failure("anthropic", "m")
    assert breaker.allow("anthropic", "m").allowed  # two failures are not an outage
    breaker.success("anthropic", "m")  # and a success forgets them
    for _ in range(3):
        breaker.failure("anthropic", "m")
    refused = breaker.allow("anthropic", "m")
    assert not refused.allowed and refused.state == OPEN and refused.retry_at is not None
    assert breaker.allow("anthropic", "other-model").allowed  # per provider and model

    clock.now += 30
    assert breaker.peek("anthropic", "m").allowed  # a probe is due; looking takes nothing
    assert breaker.peek("anthropic", "m").allowed
    probe = breaker.allow("anthropic", "m")
    assert probe.allowed and probe.state == HALF_OPEN
    refused = breaker.allow("anthropic", "m")  # one probe at a time
    assert not refused.allowed and not breaker.peek("anthropic", "m").allowed
    assert refused.retry_at is not None
    breaker.failure("anthropic", "m")  # the probe failed: open again
    assert breaker.state("anthropic", "m") == OPEN

    clock.now += 30
    assert breaker.allow("anthropic", "m").allowed
    assert breaker.success("anthropic", "m") == HALF_OPEN  # the state it closed from
    assert breaker.state("anthropic", "m") == CLOSED
    assert breaker.allow("anthropic", "m").allowed
