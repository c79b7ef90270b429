"""The ops roll-up: adds state changes and provider calls up to a watermark into hourly tables,
so the ops_* views read a few small rows plus the last minutes of raw data however big the
tables grow. Idempotent and safe to run from several processes at once (an advisory lock
serialises them); the views are right without it, only slower.

Events never change once written, so they are rolled up to a few minutes ago (longer than any
transaction that writes one stays open). A call's row takes its outcome and cost when its task
finishes, so calls are rolled up only past the longest a task can run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.session import transaction

log = logging.getLogger(__name__)

EVENTS_MARGIN = timedelta(minutes=5)
CHUNK = timedelta(days=1)  # one transaction per day of history on a first, catching-up run
ANALYZE_AFTER_CHUNKS = 6
ROLLUP_TABLES = (
    "ops_rollup_finished",
    "ops_rollup_failures",
    "ops_rollup_latency",
    "ops_rollup_cost",
)

_HOUR = "(date_trunc('hour', {col} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def _hour(col: str) -> str:
    return _HOUR.format(col=col)


_UPSERTS: dict[str, list[str]] = {
    "events": [
        f"""
        INSERT INTO ops_rollup_finished (hour, schema_name, status, documents, pages)
        SELECT {_hour("at")}, schema_name, status, count(*), sum(pages)
          FROM ops_finished_events WHERE at >= :lo AND at < :hi
         GROUP BY 1, 2, 3
        ON CONFLICT (hour, schema_name, status) DO UPDATE
           SET documents = ops_rollup_finished.documents + EXCLUDED.documents,
               pages = ops_rollup_finished.pages + EXCLUDED.pages
        """,
        f"""
        INSERT INTO ops_rollup_failures (hour, error_category, failures)
        SELECT {_hour("created_at")}, error_category, count(*)
          FROM document_events
         WHERE created_at >= :lo AND created_at < :hi AND error_category IS NOT NULL
         GROUP BY 1, 2
        ON CONFLICT (hour, error_category) DO UPDATE
           SET failures = ops_rollup_failures.failures + EXCLUDED.failures
        """,
        f"""
        INSERT INTO ops_rollup_latency (hour, stage, bucket, samples)
        SELECT {_hour("at")}, stage, pagemill_latency_bucket(seconds), count(*)
          FROM ops_event_samples WHERE at >= :lo AND at < :hi
         GROUP BY 1, 2, 3
        ON CONFLICT (hour, stage, bucket) DO UPDATE
           SET samples = ops_rollup_latency.samples + EXCLUDED.samples
        """,
    ],
    "calls": [
        f"""
        INSERT INTO ops_rollup_latency (hour, stage, bucket, samples)
        SELECT {_hour("at")}, 'model_call', pagemill_latency_bucket(seconds), count(*)
          FROM ops_call_samples WHERE at >= :lo AND at < :hi
         GROUP BY 1, 3
        ON CONFLICT (hour, stage, bucket) DO UPDATE
           SET samples = ops_rollup_latency.samples + EXCLUDED.samples
        """,
        f"""
        INSERT INTO ops_rollup_cost (hour, provider, model, schema_name, calls, input_tokens,
                                     output_tokens, cache_creation_input_tokens,
                                     cache_read_input_tokens, cost_usd, unpriced_calls)
        SELECT {_hour("at")}, provider, model, schema_name, count(*), sum(input_tokens),
               sum(output_tokens), sum(cache_creation_input_tokens),
               sum(cache_read_input_tokens), coalesce(sum(cost_usd), 0),
               count(*) FILTER (WHERE cost_usd IS NULL)
          FROM ops_call_costs WHERE at >= :lo AND at < :hi
         GROUP BY 1, 2, 3, 4
        ON CONFLICT (hour, provider, model, schema_name) DO UPDATE
           SET calls = ops_rollup_cost.calls + EXCLUDED.calls,
               input_tokens = ops_rollup_cost.input_tokens + EXCLUDED.input_tokens,
               output_tokens = ops_rollup_cost.output_tokens + EXCLUDED.output_tokens,
               cache_creation_input_tokens = ops_rollup_cost.cache_creation_input_tokens
                                             + EXCLUDED.cache_creation_input_tokens,
               cache_read_input_tokens = ops_rollup_cost.cache_read_input_tokens
                                         + EXCLUDED.cache_read_input_tokens,
               cost_usd = ops_rollup_cost.cost_usd + EXCLUDED.cost_usd,
               unpriced_calls = ops_rollup_cost.unpriced_calls + EXCLUDED.unpriced_calls
        """,
    ],
}

_FIRST = {
    "events": "SELECT min(created_at) FROM document_events",
    "calls": "SELECT min(created_at) FROM vlm_calls",
}


@dataclass(frozen=True, slots=True)
class RollupRun:
    rolled_until: dict[str, datetime]
    chunks: int
    seconds: float


def margins_for(task_time_limit_s: int, retry_cap_s: float) -> tuple[timedelta, timedelta]:
    """(events, calls): a call's row may still change for as long as its task can run (it
    takes its outcome when the task finishes), plus a retry's wait."""
    return EVENTS_MARGIN, timedelta(seconds=task_time_limit_s + retry_cap_s) + EVENTS_MARGIN


def _lock(session: Session) -> bool:
    return bool(
        session.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtext('pagemill-ops-rollup'))")
        ).scalar_one()
    )


def _roll_chunk(session: Session, source: str, target: datetime) -> datetime | None:
    """Roll `source` up towards `target` by at most one chunk; the new watermark, or None when
    it is there already."""
    lo: datetime | None = session.execute(
        text("SELECT rolled_until FROM ops_rollup_state WHERE source = :s FOR UPDATE"),
        {"s": source},
    ).scalar_one()
    if lo is None:
        lo = session.execute(text(_FIRST[source])).scalar_one()
        if lo is None:
            return None  # nothing written yet: the views read it all raw
    if lo >= target:
        return None
    hi: datetime = min(target, lo + CHUNK)
    params: dict[str, Any] = {"lo": lo, "hi": hi}
    for statement in _UPSERTS[source]:
        session.execute(text(statement), params)
    session.execute(
        text("UPDATE ops_rollup_state SET rolled_until = :hi WHERE source = :s"),
        {"hi": hi, "s": source},
    )
    return hi


def roll_up(
    sessions: sessionmaker[Session],
    *,
    margins: tuple[timedelta, timedelta],
    max_chunks: int = 10_000,
) -> RollupRun | None:
    """Bring the hourly tables up to date, to `margins` (events, calls) before now; None when
    another process is doing it right now."""
    started = time.perf_counter()
    chunks = 0
    until: dict[str, datetime] = {}
    with sessions() as session:
        now: datetime = session.execute(text("SELECT now()")).scalar_one()
    for source, margin in zip(("events", "calls"), margins, strict=True):
        # A fixed target: rows written while this runs wait for the next run.
        target = now - margin
        while chunks < max_chunks:
            with transaction(sessions) as session:
                if not _lock(session):
                    return None
                hi = _roll_chunk(session, source, target)
            if hi is None:
                break
            until[source] = hi
            chunks += 1
    if chunks > ANALYZE_AFTER_CHUNKS:
        # A catch-up filled the tables at once: give the planner their sizes now rather than
        # when autovacuum next looks (a table it believes empty gets scanned whole).
        with transaction(sessions) as session:
            session.execute(text(f"ANALYZE {', '.join(ROLLUP_TABLES)}"))
    run = RollupRun(until, chunks, time.perf_counter() - started)
    if chunks:
        log.info("ops roll-up: %d chunk(s) in %.1f s", chunks, run.seconds)
    return run
