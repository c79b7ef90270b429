"""Per-process collaborators (database, S3 client, extractors), built on first use after fork."""

from __future__ import annotations

import threading
from functools import cache

from pipeline.costing import load_price_table
from pipeline.db.session import make_engine, make_session_factory
from pipeline.extractors import build_extractor
from pipeline.extractors.base import Extractor
from pipeline.ratelimit import make_rate_limiter
from pipeline.routing import configure_schemas
from pipeline.settings import get_settings
from pipeline.storage import make_s3_client
from pipeline.usecases.process import Collaborators

_lock = threading.Lock()


@cache
def collaborators() -> Collaborators:
    # Built lazily in the worker child, never in the parent before fork: sockets and
    # connection pools must not be shared across processes.
    settings = get_settings()
    # Worker processes look schemas up by the name stored on each document.
    configure_schemas(settings.user_schemas, settings.schema_routes, settings.schema_name)
    engine = make_engine(settings.database_url, pool_size=min(settings.worker_concurrency, 20))
    extractors: dict[str, Extractor] = {}

    def extractor_for(name: str) -> Extractor:
        with _lock:
            if name not in extractors:
                extractors[name] = build_extractor(settings, name)
            return extractors[name]

    return Collaborators(
        sessions=make_session_factory(engine),
        s3=make_s3_client(settings),
        extractor_for=extractor_for,
        prices=load_price_table(settings.price_table),
        settings=settings,
        limiter=make_rate_limiter(
            settings.rate_limits,
            settings.rate_limit_redis_url or settings.broker_url,
            max_wait_s=settings.rate_limit_max_wait_s,
            lease_s=settings.rate_limit_lease_s,
        ),
    )
