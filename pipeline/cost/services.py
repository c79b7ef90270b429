"""Builds the per-process cost services with their shared state in Redis (circuit breakers,
prompt-cache activity), so every worker of a deployment sees the same."""

from __future__ import annotations

import redis
from sqlalchemy.orm import Session, sessionmaker

from pipeline.cost.circuit import RedisCircuitBreaker
from pipeline.cost.control import CostServices
from pipeline.cost.prompt_cache import RedisActivity
from pipeline.costing import PriceTable
from pipeline.settings import Settings


def make_cost_services(
    settings: Settings, prices: PriceTable, sessions: sessionmaker[Session]
) -> CostServices:
    """Call at process start, not at import: it opens a Redis connection pool."""
    client = redis.Redis.from_url(
        settings.rate_limit_redis_url or settings.broker_url,
        socket_timeout=5,
        socket_connect_timeout=5,
    )
    return CostServices(
        settings,
        prices,
        sessions,
        circuit=RedisCircuitBreaker(
            client,
            failure_threshold=settings.circuit_failures,
            open_s=settings.circuit_open_s,
            probe_s=max(settings.anthropic_timeout_s, settings.openai_timeout_s) + 30,
        ),
        activity=RedisActivity(client),
    )
