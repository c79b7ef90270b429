"""The operations overview: what the dashboard's first page shows, read from the ops_* views."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

FINAL_STATUSES = ("done", "needs_review", "failed")


@dataclass(frozen=True, slots=True)
class HourPoint:
    hour: datetime
    documents: int
    pages: int

    @property
    def pages_per_minute(self) -> float:
        return self.pages / 60.0


@dataclass(frozen=True, slots=True)
class CostLine:
    provider: str
    model: str
    schema_name: str | None
    calls_today: int
    cost_today: Decimal
    calls_month: int
    cost_month: Decimal
    unpriced_calls_month: int
    input_tokens_month: int
    output_tokens_month: int


@dataclass(slots=True)
class Overview:
    hours: int
    throughput: list[HourPoint]
    finished: dict[str, int]  # final status -> documents in the window
    pages: int
    backlog: list[dict[str, Any]]  # ops_backlog rows
    latency: list[dict[str, Any]]  # ops_stage_latency rows
    failures: list[dict[str, Any]]  # error_category, failures (in the window)
    dead_letters: list[dict[str, Any]]  # ops_dead_letters rows
    cost: list[CostLine]
    stuck: list[dict[str, Any]]  # the oldest ops_stuck rows
    stuck_total: int
    now: datetime
    totals: dict[str, Decimal] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return sum(r["documents"] for r in self.backlog if r["status"] == "processing")

    @property
    def waiting(self) -> int:
        return sum(r["documents"] for r in self.backlog if r["status"] != "processing")

    @property
    def open_letters(self) -> int:
        return sum(r["open_letters"] for r in self.dead_letters)

    @property
    def peak_pages_per_minute(self) -> float:
        return max((p.pages_per_minute for p in self.throughput), default=0.0)


def _rows(session: Session, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in session.execute(text(sql), params).mappings()]


def load_overview(session: Session, *, hours: int = 24, stuck_limit: int = 10) -> Overview:
    """Every number of the overview, from the views (one read-only transaction)."""
    hours = max(1, min(hours, 24 * 7))
    now = session.execute(text("SELECT now()")).scalar_one()
    by_hour = _rows(
        session,
        """
        SELECT hour, status, sum(documents) AS documents, sum(pages) AS pages
          FROM ops_throughput_hourly
         WHERE hour > now() - make_interval(hours => :hours)
         GROUP BY hour, status
        """,
        hours=hours,
    )
    finished = dict.fromkeys(FINAL_STATUSES, 0)
    points: dict[datetime, list[int]] = {}
    for row in by_hour:
        finished[row["status"]] = finished.get(row["status"], 0) + int(row["documents"])
        point = points.setdefault(row["hour"], [0, 0])
        point[0] += int(row["documents"])
        point[1] += int(row["pages"])
    throughput = [HourPoint(h, d, p) for h, (d, p) in sorted(points.items())]

    backlog = _rows(session, "SELECT * FROM ops_backlog ORDER BY stage, status")
    latency = _rows(session, "SELECT * FROM ops_stage_latency")
    failures = _rows(
        session,
        """
        SELECT error_category, sum(failures) AS failures
          FROM ops_failures_hourly
         WHERE hour > now() - make_interval(hours => :hours)
         GROUP BY error_category
         ORDER BY 2 DESC, 1
        """,
        hours=hours,
    )
    dead_letters = _rows(session, "SELECT * FROM ops_dead_letters ORDER BY open_letters DESC")
    cost_rows = _rows(
        session,
        """
        SELECT provider, model, schema_name,
               sum(calls) FILTER (WHERE day = today) AS calls_today,
               sum(cost_usd) FILTER (WHERE day = today) AS cost_today,
               sum(calls) AS calls_month, sum(cost_usd) AS cost_month,
               sum(unpriced_calls) AS unpriced_month,
               sum(input_tokens + cache_creation_input_tokens + cache_read_input_tokens)
                   AS input_month,
               sum(output_tokens) AS output_month
          FROM ops_cost_daily,
               LATERAL (SELECT date_trunc('day', now() AT TIME ZONE 'UTC')
                               AT TIME ZONE 'UTC' AS today) t
         WHERE day >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
         GROUP BY provider, model, schema_name
         ORDER BY sum(cost_usd) DESC, provider, model, schema_name
        """,
    )
    cost = [
        CostLine(
            provider=r["provider"],
            model=r["model"],
            schema_name=r["schema_name"],
            calls_today=int(r["calls_today"] or 0),
            cost_today=Decimal(r["cost_today"] or 0),
            calls_month=int(r["calls_month"] or 0),
            cost_month=Decimal(r["cost_month"] or 0),
            unpriced_calls_month=int(r["unpriced_month"] or 0),
            input_tokens_month=int(r["input_month"] or 0),
            output_tokens_month=int(r["output_month"] or 0),
        )
        for r in cost_rows
    ]
    stuck = _rows(
        session, "SELECT * FROM ops_stuck ORDER BY age_s DESC LIMIT :limit", limit=stuck_limit
    )
    stuck_total = (
        len(stuck)
        if len(stuck) < stuck_limit
        else int(session.execute(text("SELECT count(*) FROM ops_stuck")).scalar_one())
    )
    return Overview(
        hours=hours,
        throughput=throughput,
        finished=finished,
        pages=sum(p.pages for p in throughput),
        backlog=backlog,
        latency=latency,
        failures=failures,
        dead_letters=dead_letters,
        cost=cost,
        stuck=stuck,
        stuck_total=stuck_total,
        now=now,
        totals={
            "cost_today": sum((c.cost_today for c in cost), Decimal(0)),
            "cost_month": sum((c.cost_month for c in cost), Decimal(0)),
        },
    )
