"""What `pagemill status` and the scrape-time metrics read from Postgres: the ops_* views and
the age of the oldest unfinished document."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from pipeline.domain import DocumentStatus

UNFINISHED = [status.value for status in DocumentStatus if not status.is_final]

# Served by ix_documents_status_updated: only the unfinished documents are read.
_OLDEST_PENDING = text(
    "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8"
    " FROM documents WHERE status = ANY(:statuses)"
)


def oldest_pending_age_s(session: Session) -> float:
    """Seconds since the oldest document that is not final yet arrived; 0 when none is."""
    value = session.execute(_OLDEST_PENDING, {"statuses": UNFINISHED}).scalar_one()
    return float(value)


@dataclass(slots=True)
class StageLatency:
    stage: str
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    samples: int


@dataclass(slots=True)
class StatusSnapshot:
    """One look at the pipeline, from Postgres (queue depths are added by the caller)."""

    at: datetime
    backlog: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> status -> n
    in_flight: dict[str, int] = field(default_factory=dict)  # stage -> documents processing
    oldest_pending_age_s: float = 0.0
    pages_per_minute: float = 0.0  # over the last `window_min` minutes
    documents_per_minute: float = 0.0
    window_min: int = 15
    finished_last_hour: dict[str, int] = field(default_factory=dict)  # status -> documents
    stage_latency: list[StageLatency] = field(default_factory=list)
    cost_today_usd: Decimal = Decimal(0)
    unpriced_calls_today: int = 0
    cost_today_by_model: dict[str, Decimal] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # category -> open letters
    oldest_dead_letter_age_s: float | None = None
    stuck: int = 0


def snapshot(session: Session, *, window_min: int = 15) -> StatusSnapshot:
    """Read the ops views (the numbers the dashboards show) into one snapshot."""
    now = session.execute(text("SELECT now()")).scalar_one()
    snap = StatusSnapshot(at=now.astimezone(UTC), window_min=window_min)
    for row in session.execute(text("SELECT stage, status, documents FROM ops_backlog")):
        by_status = snap.backlog.setdefault(row.stage, {})  # waiting ones are rows of their own
        by_status[row.status] = by_status.get(row.status, 0) + int(row.documents)
        if row.status == DocumentStatus.PROCESSING.value:
            snap.in_flight[row.stage] = snap.in_flight.get(row.stage, 0) + int(row.documents)
    snap.oldest_pending_age_s = oldest_pending_age_s(session)
    # The rows ops_throughput_hourly counts, read directly: the view is by the hour.
    recent = session.execute(
        text(
            "SELECT count(*) AS documents, COALESCE(sum(page_count), 0) AS pages"
            " FROM documents WHERE finished_at >= now() - make_interval(mins => :m)"
            " AND status = ANY(:final)"
        ),
        {"m": window_min, "final": _FINAL},
    ).one()
    snap.documents_per_minute = int(recent.documents) / window_min
    snap.pages_per_minute = int(recent.pages) / window_min
    for row in session.execute(
        text(
            "SELECT status, count(*) AS documents FROM documents"
            " WHERE finished_at >= now() - interval '1 hour' AND status = ANY(:final)"
            " GROUP BY status"
        ),
        {"final": _FINAL},
    ):
        snap.finished_last_hour[row.status] = int(row.documents)
    snap.stage_latency = [
        StageLatency(
            stage=row.stage,
            p50_s=_float(row.p50_s),
            p95_s=_float(row.p95_s),
            p99_s=_float(row.p99_s),
            samples=int(row.samples),
        )
        for row in session.execute(
            text("SELECT stage, p50_s, p95_s, p99_s, samples FROM ops_stage_latency")
        )
    ]
    for row in session.execute(
        text(
            "SELECT provider, model, sum(cost_usd) AS cost, sum(unpriced_calls) AS unpriced"
            " FROM ops_cost_daily"
            " WHERE day = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
            " GROUP BY provider, model ORDER BY provider, model"
        )
    ):
        cost = row.cost if row.cost is not None else Decimal(0)
        snap.cost_today_by_model[f"{row.provider}:{row.model}"] = cost
        snap.cost_today_usd += cost
        snap.unpriced_calls_today += int(row.unpriced or 0)
    for row in session.execute(
        text("SELECT error_category, open_letters, oldest_age_s FROM ops_dead_letters")
    ):
        if int(row.open_letters):
            snap.dead_letters[row.error_category] = int(row.open_letters)
            age = _float(row.oldest_age_s)
            if age is not None:
                snap.oldest_dead_letter_age_s = max(snap.oldest_dead_letter_age_s or 0.0, age)
    snap.stuck = int(session.execute(text("SELECT count(*) FROM ops_stuck")).scalar_one())
    return snap


_FINAL = [status.value for status in DocumentStatus if status.is_final]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
