"""Per-process collaborators (database, S3 client, extractors), built once per worker process.

`warm_up()` builds them at process start (see the signal handlers in `workers.app`), so the
first task does not pay for them; without it they are built on first use.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from functools import cache

from sqlalchemy import text

from pipeline.cost.services import make_cost_services
from pipeline.costing import load_price_table
from pipeline.db.session import make_engine, make_session_factory
from pipeline.extractors import build_extractor, sdk_module
from pipeline.extractors.base import Extractor
from pipeline.ocr.preprocess import one_thread_per_call
from pipeline.ratelimit import make_rate_limiter
from pipeline.routing import configure_schemas
from pipeline.settings import get_settings
from pipeline.storage import make_s3_client
from pipeline.usecases.process import Collaborators

log = logging.getLogger(__name__)

_lock = threading.Lock()
_build_lock = threading.Lock()


def collaborators() -> Collaborators:
    # A threads pool's first tasks arrive together: without the lock each would build its own
    # engine and clients (functools.cache does not make concurrent first calls wait).
    with _build_lock:
        return _build_collaborators()


@cache
def _build_collaborators() -> Collaborators:
    # Built in the worker child, never in the parent before fork: sockets and connection
    # pools must not be shared across processes.
    settings = get_settings()
    # Worker processes look schemas up by the name stored on each document.
    configure_schemas(settings.user_schemas, settings.schema_routes, settings.schema_name)
    engine = make_engine(settings.database_url, pool_size=min(settings.worker_concurrency, 20))
    sessions = make_session_factory(engine)
    prices = load_price_table(settings.price_table)
    extractors: dict[str, Extractor] = {}

    def extractor_for(name: str) -> Extractor:
        with _lock:
            if name not in extractors:
                extractors[name] = build_extractor(settings, name)
            return extractors[name]

    return Collaborators(
        sessions=sessions,
        s3=make_s3_client(settings),
        extractor_for=extractor_for,
        prices=prices,
        settings=settings,
        cost=make_cost_services(settings, prices, sessions),
        limiter=make_rate_limiter(
            settings.rate_limits,
            settings.rate_limit_redis_url or settings.broker_url,
            max_wait_s=settings.rate_limit_max_wait_s,
            lease_s=settings.rate_limit_lease_s,
        ),
    )


def import_provider_sdk() -> None:
    """Import the default provider's SDK. Modules only, no client: safe before a fork, after
    which every pool process shares the imported code instead of importing it again."""
    provider = get_settings().default_provider
    try:
        module = sdk_module(provider)
    except Exception:
        log.exception("looking up the %s provider failed; the first task will try again", provider)
        return
    if module is None:
        return
    started = time.perf_counter()
    try:
        importlib.import_module(module)
    except Exception:
        # The first task imports it again and fails loudly.
        log.exception("importing the %s SDK failed; the first task will try again", provider)
        return
    log.info("imported the %s SDK in %.2f s", provider, time.perf_counter() - started)


def warm_up() -> bool:
    """Build this process's collaborators and its default extractor now and connect to the
    database once, so the first task does not pay for it. True when all of it worked.

    Never raises: a failure is logged, and what failed is not kept (`collaborators()` caches
    only a result, `extractor_for` only a built extractor), so the first task builds it again
    and fails loudly, as it would have without warm-up.
    """
    started = time.perf_counter()
    one_thread_per_call()  # every core already has a worker process, or the pool has threads
    try:
        deps = collaborators()
        deps.extractor_for(deps.settings.default_provider)
        with deps.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        log.exception("worker warm-up failed; the first task will build its collaborators again")
        return False
    log.info("worker process warmed up in %.2f s", time.perf_counter() - started)
    return True
