"""Serving metrics: the multiprocess directory a serving process owns, its /metrics endpoint,
and the gauges read at scrape time (Celery queue depths from Redis, the oldest pending
document from Postgres).

Who serves what:
* `pagemill worker` (the launcher of the two stage workers) serves every process of both stage
  workers on PAGEMILL_METRICS_PORT: it owns the directory and starts the stage workers with
  PROMETHEUS_MULTIPROC_DIR pointing at it and their own port off. One port per host, one
  scrape target, no double counting.
* A single Celery worker (`pagemill worker --queues …`, or `celery worker` on this app) serves
  its main process and its prefork children from its main process.
* `pagemill ingest` serves its own process; the web server serves `/metrics` on its port.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Everything a scrape uses is imported here, in the thread that imports this module, never
# during a scrape: scrapes run in the metrics server's thread, and a prefork pool that forks
# while that thread holds a module's import lock leaves its children blocked for good on their
# first import of that module (seen: tasks received, never run).
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from pipeline import metrics
from pipeline.cost.circuit import RedisCircuitBreaker
from pipeline.settings import Settings
from pipeline.usecases.ops_status import oldest_pending_age_s
from workers import queues

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

# kombu's Redis transport keeps a queue's messages of priority p in the list "<queue>\x06\x16p"
# (priority 0 in "<queue>"), for its default priority steps.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
_SOURCE_TIMEOUT_S = 2.0


@dataclass(slots=True)
class _Reading:
    at: float = float("-inf")
    depths: dict[str, int] | None = None
    oldest_pending_s: float | None = None
    circuits: list[tuple[str, str, int]] | None = None


@dataclass(eq=False)  # registries key collectors by identity
class ScrapeTimeMetrics:
    """Gauges of shared state, read when Prometheus scrapes (at most every `cache_s`): each
    process that serves /metrics reports the same values, so dashboards take max() of them."""

    broker_url: str
    database_url: str
    cache_s: float = 5.0
    circuit_redis_url: str | None = None  # the circuit breakers' Redis (default: the broker)
    _reading: _Reading = field(default_factory=_Reading)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _engine: Engine | None = None

    def __post_init__(self) -> None:
        self._database()  # loads the database driver's modules now, not in a scrape

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        up = GaugeMetricFamily(
            "pagemill_scrape_source_up",
            "Whether the last read of a scrape-time source (redis, postgres) worked.",
            labels=["source"],
        )
        up.add_metric(["redis"], 1.0 if reading.depths is not None else 0.0)
        up.add_metric(["postgres"], 1.0 if reading.oldest_pending_s is not None else 0.0)
        yield up
        if reading.depths is not None:
            depth = GaugeMetricFamily(
                "pagemill_queue_depth",
                "Messages waiting in each Celery queue (read from Redis at scrape time).",
                labels=["queue"],
            )
            for queue, count in sorted(reading.depths.items()):
                depth.add_metric([queue], float(count))
            yield depth
        if reading.oldest_pending_s is not None:
            yield GaugeMetricFamily(
                "pagemill_oldest_pending_age_seconds",
                "Age of the oldest document not finished yet (0 when there is none).",
                value=reading.oldest_pending_s,
            )
        if reading.circuits is not None:
            circuit = GaugeMetricFamily(
                "pagemill_circuit_state",
                "Each provider and model's circuit breaker: 0 closed, 1 half-open, 2 open "
                "(shared state, read from Redis at scrape time).",
                labels=["provider", "model"],
            )
            for provider, model, value in reading.circuits:
                circuit.add_metric([provider, model], float(value))
            yield circuit

    def _read(self) -> _Reading:
        with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._reading.at >= self.cache_s:
                self._reading = _Reading(
                    at=time.monotonic(),
                    depths=self._queue_depths(),
                    oldest_pending_s=self._oldest_pending(),
                    circuits=self._circuits(),
                )
            return self._reading

    def _queue_depths(self) -> dict[str, int] | None:
        try:
            return queue_depths(self.broker_url)
        except redis.RedisError as exc:
            log.debug("queue depths unavailable: %s", exc)
            return None

    def _circuits(self) -> list[tuple[str, str, int]] | None:
        client = redis.Redis.from_url(
            self.circuit_redis_url or self.broker_url,
            socket_timeout=_SOURCE_TIMEOUT_S,
            socket_connect_timeout=_SOURCE_TIMEOUT_S,
        )
        try:
            return RedisCircuitBreaker(client).samples()
        except redis.RedisError as exc:
            log.debug("circuit states unavailable: %s", exc)
            return None
        finally:
            client.close()

    def _oldest_pending(self) -> float | None:
        try:
            with Session(self._database()) as session:
                return oldest_pending_age_s(session)
        except SQLAlchemyError as exc:
            log.debug("oldest pending age unavailable: %s", " ".join(str(exc).split())[:200])
            return None

    def _database(self) -> Engine:
        if self._engine is None:
            # No pool: a connection per read (every few seconds at most) is cheap, and nothing
            # open crosses a fork of the worker's pool processes.
            self._engine = create_engine(
                self.database_url,
                poolclass=NullPool,
                connect_args={
                    "connect_timeout": int(_SOURCE_TIMEOUT_S),
                    "options": f"-c statement_timeout={int(_SOURCE_TIMEOUT_S * 1000)}",
                },
            )
        return self._engine


def queue_depths(broker_url: str) -> dict[str, int]:
    """Messages waiting in each of our Celery queues (all priorities); raises RedisError."""
    names = queues.CONSUMED
    client = redis.Redis.from_url(
        broker_url, socket_timeout=_SOURCE_TIMEOUT_S, socket_connect_timeout=_SOURCE_TIMEOUT_S
    )
    try:
        pipe = client.pipeline(transaction=False)
        for name in names:
            for step in _PRIORITY_STEPS:
                pipe.llen(f"{name}{_PRIORITY_SEPARATOR}{step}" if step else name)
        counts = pipe.execute()
    finally:
        client.close()
    per_queue = len(_PRIORITY_STEPS)
    return {
        name: sum(int(n) for n in counts[i * per_queue : (i + 1) * per_queue])
        for i, name in enumerate(names)
    }


def scrape_registry(settings: Settings) -> CollectorRegistry:
    """Everything a scrape of this process shows: what the pagemill processes recorded, and
    the scrape-time gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.RecordedMetrics())
    registry.register(
        ScrapeTimeMetrics(
            settings.broker_url,
            settings.database_url,
            settings.metrics_cache_s,
            circuit_redis_url=settings.rate_limit_redis_url,
        )
    )
    return registry


@dataclass
class MetricsEndpoint:
    directory: Path
    owned: bool  # a private temporary directory, removed at exit
    url: str | None = None
    _server: Any = None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.owned:
            shutil.rmtree(self.directory, ignore_errors=True)


def record_here(settings: Settings, role: str) -> MetricsEndpoint:
    """Make this process the owner of a fresh multiprocess directory: the processes it forks
    or starts from now on record into it (they inherit PROMETHEUS_MULTIPROC_DIR)."""
    if settings.metrics_dir is not None:
        # One subdirectory per role: a web server and a worker may share the setting.
        directory, owned = settings.metrics_dir / role, False
    else:
        directory, owned = Path(tempfile.mkdtemp(prefix=f"pagemill-metrics-{role}-")), True
    metrics.use_directory(directory, clean=True)
    metrics.initialize([settings.schema_name], [settings.default_provider])
    endpoint = MetricsEndpoint(directory=directory, owned=owned)
    atexit.register(endpoint.close)
    return endpoint


def serve(settings: Settings, role: str) -> MetricsEndpoint | None:
    """Serve this process's (and its children's) metrics on PAGEMILL_METRICS_PORT; None when
    the port is 0. A port in use is logged and the process goes on without an endpoint."""
    if settings.metrics_port == 0:
        return None
    from prometheus_client import start_http_server

    endpoint = record_here(settings, role)
    try:
        server, _ = start_http_server(
            settings.metrics_port, settings.metrics_host, registry=scrape_registry(settings)
        )
    except OSError as exc:
        log.warning(
            "cannot serve metrics on %s:%d (%s): set PAGEMILL_METRICS_PORT to a free port for "
            "this process, or 0 for none",
            settings.metrics_host,
            settings.metrics_port,
            exc.strerror or str(exc),
        )
        return endpoint
    endpoint._server = server
    endpoint.url = f"http://{settings.metrics_host}:{server.server_port}/metrics"
    log.info("metrics at %s (pid %d)", endpoint.url, os.getpid())
    return endpoint


_served: dict[str, CollectorRegistry] = {}


def render(settings: Settings) -> tuple[bytes, str]:
    """The body and content type of a /metrics response (the web server's route); the web
    process calls `record_here(settings, "web")` at start."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = _served.get("registry")
    if registry is None:
        registry = _served.setdefault("registry", scrape_registry(settings))
    return generate_latest(registry), CONTENT_TYPE_LATEST
