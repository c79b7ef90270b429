"""Prometheus metrics: the names every pagemill process reports, and one-line hooks to feed them.

Names and labels are an interface (Grafana dashboards and alerts use them); labels have few
values each (statuses, schemas, providers, models, error categories), never ids or keys.

Multiprocess mode: a Celery prefork worker runs tasks in child processes, so counters kept in
process memory would be lost with each child (and never seen by the process serving /metrics).
prometheus_client's multiprocess mode keeps every process's values in a memory-mapped file in
one directory; the serving process sums them at scrape time, dead processes' counters included.
prometheus_client decides the mode when it is first imported, from the environment variable
PROMETHEUS_MULTIPROC_DIR, so this module imports it only when the first metric is created:
`use_directory()` (called by the serving process, see workers.telemetry) sets the variable from
settings before that, and processes forked or started from there inherit it.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric
    from sqlalchemy.orm import Session

    from pipeline.domain import CallRecord

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Model calls take from a fraction of a second (small local models) to minutes (long
# documents on a hosted model); the provider timeout caps them at 600 s.
CALL_SECONDS_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

TOKEN_KINDS = ("input", "output", "cache_creation_input", "cache_read_input")

OCR_SETTINGS = ("thorough", "fast")
OCR_STEPS = ("decode", "preprocess", "detect", "recognise")  # as pipeline.ocr.STEPS


class _Metrics:
    """The metric objects of this process, created on first use (see the module docstring)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # Single-process mode exposes this registry; multiprocess mode reads the files instead.
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.documents_finished: Counter = Counter(
            "pagemill_documents_finished",
            "Documents that reached a final status (done, needs_review, failed).",
            ["status", "schema"],
            registry=r,
        )
        self.pages: Counter = Counter(
            "pagemill_pages",
            "Pages of the documents that reached a final status.",
            ["schema"],
            registry=r,
        )
        self.call_seconds: Histogram = Histogram(
            "pagemill_model_call_seconds",
            "Model call latency (the provider's, rate-limit waits excluded), by outcome.",
            ["provider", "model", "outcome"],
            buckets=CALL_SECONDS_BUCKETS,
            registry=r,
        )
        self.tokens: Counter = Counter(
            "pagemill_tokens",
            "Tokens of completed model calls, by kind "
            "(input, output, cache_creation_input, cache_read_input).",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.cost: Counter = Counter(
            "pagemill_cost_usd",
            "What model calls cost, in US dollars (calls without a known price add nothing).",
            ["provider", "model"],
            registry=r,
        )
        self.unpriced_calls: Counter = Counter(
            "pagemill_unpriced_calls",
            "Completed model calls whose cost is unknown (no price for the model).",
            ["provider", "model"],
            registry=r,
        )
        self.retries: Counter = Counter(
            "pagemill_retries",
            "Task retries scheduled after a transient error, by error category.",
            ["category"],
            registry=r,
        )
        self.rate_limit_wait: Counter = Counter(
            "pagemill_rate_limit_wait_seconds",
            "Time spent waiting for a shared rate-limit permit before a model call.",
            ["provider"],
            registry=r,
        )
        self.dead_letters: Counter = Counter(
            "pagemill_dead_letters",
            "Documents that failed for good and were kept as dead letters, by error category.",
            ["category"],
            registry=r,
        )
        self.ocr_pages: Counter = Counter(
            "pagemill_ocr_pages",
            "Pages read by OCR, by setting (thorough: the offline extractor; fast: grounding "
            "a model's answer).",
            ["setting"],
            registry=r,
        )
        self.ocr_cpu: Counter = Counter(
            "pagemill_ocr_cpu_seconds",
            "CPU time spent reading pages by OCR, by setting and step (decode, preprocess, "
            "detect, recognise): on scanned pages, most of a worker's CPU.",
            ["setting", "step"],
            registry=r,
        )
        # livesum: the calls in flight of the processes alive now, summed.
        self.in_flight: Gauge = Gauge(
            "pagemill_calls_in_flight",
            "Model calls waiting for the provider's answer right now.",
            ["provider"],
            multiprocess_mode="livesum",
            registry=r,
        )


_lock = threading.Lock()
_metrics: _Metrics | None = None


def _get() -> _Metrics:
    global _metrics  # noqa: PLW0603 - one set of metric objects per process, made on first use
    found = _metrics
    if found is None:
        with _lock:
            if _metrics is None:
                _metrics = _Metrics()
            found = _metrics
    return found


def initialize(schemas: Iterable[str], providers: Iterable[str]) -> None:
    """Create the series whose label values are known in advance with value 0, so that
    dashboards and alerts see 0 rather than no data, and `rate()` counts the first event."""
    from pipeline.domain import DocumentStatus
    from pipeline.errors import ErrorCategory

    metrics = _get()
    for schema in schemas:
        metrics.pages.labels(schema=schema)
        for status in DocumentStatus:
            if status.is_final:
                metrics.documents_finished.labels(status=status.value, schema=schema)
    for category in ErrorCategory:
        metrics.retries.labels(category=category.value)
        metrics.dead_letters.labels(category=category.value)
    for provider in providers:
        metrics.rate_limit_wait.labels(provider=provider)
        metrics.in_flight.labels(provider=provider)
    for setting in OCR_SETTINGS:
        metrics.ocr_pages.labels(setting=setting)
        for step in OCR_STEPS:
            metrics.ocr_cpu.labels(setting=setting, step=step)


# --- hooks: one line where the work happens --------------------------------------------------


def document_finished(status: str, schema: str, pages: int | None) -> None:
    metrics = _get()
    metrics.documents_finished.labels(status=status, schema=schema).inc()
    if pages:
        metrics.pages.labels(schema=schema).inc(pages)


def calls_recorded(calls: Sequence[CallRecord]) -> None:
    """Completed model calls (a `started` row is not a completed call)."""
    metrics = _get()
    for call in calls:
        outcome = str(call.outcome)
        if outcome == "started":
            continue
        provider, model = call.provider, call.model
        metrics.call_seconds.labels(provider=provider, model=model, outcome=outcome).observe(
            call.latency_ms / 1000.0
        )
        usage = call.usage
        for kind, count in zip(
            TOKEN_KINDS,
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_creation_input_tokens,
                usage.cache_read_input_tokens,
            ),
            strict=True,
        ):
            if count:
                metrics.tokens.labels(provider=provider, model=model, kind=kind).inc(count)
        # Both series exist from a model's first call on (at 0), so that queries see zero.
        unpriced = metrics.unpriced_calls.labels(provider=provider, model=model)
        cost = metrics.cost.labels(provider=provider, model=model)
        if call.cost_usd is None:
            unpriced.inc()
        else:
            cost.inc(float(call.cost_usd))


@contextmanager
def call_in_flight(provider: str) -> Iterator[None]:
    gauge = _get().in_flight.labels(provider=provider)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def retry_scheduled(category: str) -> None:
    _get().retries.labels(category=str(category)).inc()


def rate_limit_waited(provider: str, seconds: float) -> None:
    if seconds > 0:
        _get().rate_limit_wait.labels(provider=provider).inc(seconds)


def dead_lettered(category: str) -> None:
    _get().dead_letters.labels(category=str(category)).inc()


def page_ocred(setting: str, cpu_by_step: Mapping[str, float]) -> None:
    """One page read by OCR with `setting`, and the CPU seconds each step took."""
    metrics = _get()
    metrics.ocr_pages.labels(setting=setting).inc()
    for step, seconds in cpu_by_step.items():
        if seconds > 0:
            metrics.ocr_cpu.labels(setting=setting, step=step).inc(seconds)


# --- counting what was committed -------------------------------------------------------------

_PENDING_KEY = "pagemill_metrics_after_commit"
_listening = False


def after_commit(session: Session, fn: Callable[..., None], *args: Any) -> None:
    """Run `fn(*args)` once the session's transaction commits, never if it rolls back: a
    metric counts what Postgres holds, so a retried transaction is not counted twice."""
    _listen()
    session.info.setdefault(_PENDING_KEY, []).append((fn, args))


def _listen() -> None:
    global _listening  # noqa: PLW0603 - the listeners are registered once per process
    if _listening:
        return
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    with _lock:
        if not _listening:
            event.listen(Session, "after_commit", _run_pending)
            event.listen(Session, "after_soft_rollback", _drop_pending)
            _listening = True


def _run_pending(session: Session) -> None:
    for fn, args in session.info.pop(_PENDING_KEY, ()):
        try:
            fn(*args)
        except Exception:  # a metric must never fail the work it counts
            log.exception("updating a metric failed")


def _drop_pending(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # the outermost transaction rolled back
        session.info.pop(_PENDING_KEY, None)


# --- multiprocess mode --------------------------------------------------------------------------

_DB_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")


def use_directory(directory: Path, *, clean: bool) -> None:
    """Record this process's metrics (and those of the processes it starts) in `directory`.

    Call it before the first metric is created. `clean` empties the directory of a previous
    run's files (they would otherwise be summed into this run's counters)."""
    directory.mkdir(parents=True, exist_ok=True)
    if clean:
        for path in directory.glob("*.db"):
            path.unlink(missing_ok=True)
    with _lock:
        if _metrics is not None and not multiprocess():
            raise RuntimeError("metrics were created before their multiprocess directory was set")
        os.environ[MULTIPROC_ENV] = str(directory)
        from prometheus_client import values

        # The module chose its value class at import; choose again now that the variable is
        # set (nothing was created with the old class, as checked above).
        values.ValueClass = values.get_value_class()


def multiprocess() -> bool:
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


def directory() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def process_exited(pid: int) -> None:
    """Forget a finished process's live gauges (its counters stay: they are history)."""
    found = directory()
    if found is not None:
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid, str(found))


def forget_dead_processes(path: Path) -> list[int]:
    """Live gauges of processes that died without saying so (killed): checked at scrape time."""
    from prometheus_client import multiprocess as mp

    dead = []
    for name in glob.glob(str(path / "gauge_live*_*.db")):
        match = _DB_FILE.match(os.path.basename(name))
        if match is None:
            continue
        pid = int(match.group(1))
        if not _alive(pid):
            mp.mark_process_dead(pid, str(path))
            dead.append(pid)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RecordedMetrics:
    """A collector of what the pagemill processes recorded: in multiprocess mode every
    process's files (live gauges of processes killed without notice dropped first), else this
    process's own metrics."""

    def collect(self) -> Iterator[Metric]:
        found = directory()
        if found is not None and multiprocess():
            from prometheus_client.multiprocess import MultiProcessCollector

            forget_dead_processes(found)
            yield from MultiProcessCollector(None, str(found)).collect()
        else:
            yield from _get().registry.collect()
