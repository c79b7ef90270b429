"""Budgets: each document's own token and money budget, and spending caps per day, per month
and per bucket prefix (a tenant) that make work wait instead of spending past them.

A call charges its estimate to the ledger of every cap that applies when it starts, in the same
transaction that writes its `started` row; a charge that would take a ledger over its cap is
refused (the transaction rolls back: no row, no call). When the call's outcome is written, a
trigger corrects the ledger to the actual cost. A worker killed mid-call leaves its estimate
charged, which is right: the provider may bill that call.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.cost.hooks import BudgetExceeded, DocumentBudgetSpent
from pipeline.db.cost_models import BudgetCap, BudgetLedger
from pipeline.domain import CallRecord

DAY, MONTH = "day", "month"


# --- the document's own budget ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocumentBudget:
    """What one document may spend in all, re-asks, re-checks, escalations and retries
    included (None: no limit), and what it had spent before this attempt."""

    usd: Decimal | None
    tokens: int | None
    spent_usd: Decimal = Decimal(0)
    spent_tokens: int = 0


def call_spend(call: CallRecord) -> tuple[Decimal, int]:
    """What a call counts against budgets: its cost, or its estimate while the cost is unknown
    (in flight, or failed after it was sent)."""
    if call.cost_usd is not None:
        tokens = call.usage.total_input_tokens + call.usage.output_tokens
        return call.cost_usd, tokens
    return call.estimated_cost_usd or Decimal(0), call.estimated_input_tokens or 0


def spent_before(session: Session, document_id: int) -> tuple[Decimal, int]:
    row = session.execute(
        text(
            """
            SELECT coalesce(sum(coalesce(cost_usd, estimated_cost_usd, 0)), 0),
                   coalesce(sum(CASE WHEN cost_usd IS NULL THEN coalesce(estimated_input_tokens, 0)
                                     ELSE input_tokens + cache_creation_input_tokens
                                          + cache_read_input_tokens + output_tokens END), 0)
              FROM vlm_calls WHERE document_id = :d
            """
        ),
        {"d": document_id},
    ).one()
    return Decimal(row[0]), int(row[1])


def check_document(
    budget: DocumentBudget, calls: Iterable[CallRecord], est_usd: Decimal | None, est_tokens: int
) -> None:
    """Raise DocumentBudgetSpent when one more call of this estimate would go over."""
    usd, tokens = budget.spent_usd, budget.spent_tokens
    for call in calls:
        call_usd, call_tokens = call_spend(call)
        usd += call_usd
        tokens += call_tokens
    if budget.usd is not None and est_usd is not None and usd + est_usd > budget.usd:
        raise DocumentBudgetSpent(
            f"budget: the document spent ${_plain(usd)} of its ${_plain(budget.usd)}; "
            f"another call (~${_plain(est_usd)}) would go over, so it was not made"
        )
    if budget.tokens is not None and tokens + est_tokens > budget.tokens:
        raise DocumentBudgetSpent(
            f"budget: the document used {tokens:,} of its {budget.tokens:,} tokens; "
            f"another call (~{est_tokens:,}) would go over, so it was not made"
        )


def _plain(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001")), "f")


# --- caps ---------------------------------------------------------------------------------------


def normalise_prefix(prefix: str) -> str:
    """ "" (everything) or "s3://bucket/key-prefix"; "bucket/prefix" is accepted too."""
    prefix = prefix.strip()
    if not prefix or prefix == "*":
        return ""
    return prefix if prefix.startswith("s3://") else "s3://" + prefix.lstrip("/")


def object_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def period_start(period: str, at: datetime) -> date:
    day = at.astimezone(UTC).date()
    return day if period == DAY else day.replace(day=1)


def period_end(period: str, start: date) -> datetime:
    if period == DAY:
        end = start + timedelta(days=1)
    else:
        end = start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


def applicable_caps(session: Session, url: str) -> list[tuple[str, str, Decimal]]:
    rows = session.execute(
        select(BudgetCap.period, BudgetCap.prefix, BudgetCap.limit_usd).where(
            (BudgetCap.prefix == "") | func.starts_with(url, BudgetCap.prefix)
        )
    ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def _spent_since(session: Session, prefix: str, start: datetime, end: datetime) -> Decimal:
    """What calls of this scope cost within [start, end): a ledger's opening balance."""
    value = session.execute(
        text(
            """
            SELECT coalesce(sum(coalesce(c.cost_usd, c.estimated_cost_usd, 0)), 0)
              FROM vlm_calls c JOIN documents d ON d.id = c.document_id
             WHERE c.created_at >= :start AND c.created_at < :end
               AND starts_with('s3://' || d.bucket || '/' || d.key, :prefix)
            """
        ),
        {"start": start, "end": end, "prefix": prefix},
    ).scalar_one()
    return Decimal(value)


def ledger_id(session: Session, period: str, prefix: str, at: datetime) -> int:
    """The ledger row of this cap scope for the period containing `at`, created with what the
    scope already spent in that period (a cap set mid-day counts the day's earlier calls)."""
    start = period_start(period, at)
    found = session.execute(
        select(BudgetLedger.id).where(
            BudgetLedger.period == period,
            BudgetLedger.period_start == start,
            BudgetLedger.prefix == prefix,
        )
    ).scalar_one_or_none()
    if found is not None:
        return found
    opening = _spent_since(
        session,
        prefix,
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        period_end(period, start),
    )
    session.execute(
        insert(BudgetLedger)
        .values(period=period, period_start=start, prefix=prefix, spent_usd=opening)
        .on_conflict_do_nothing(constraint="uq_budget_ledger_scope")
    )
    return session.execute(
        select(BudgetLedger.id).where(
            BudgetLedger.period == period,
            BudgetLedger.period_start == start,
            BudgetLedger.prefix == prefix,
        )
    ).scalar_one()


def charge_caps(
    session: Session,
    url: str,
    estimate: Decimal | None,
    *,
    recheck_s: float,
    now: datetime | None = None,
) -> list[int]:
    """Charge a call's estimate to every cap that applies to the object at `url`; the ledger ids
    charged. Raises BudgetExceeded (charge nothing: the caller's transaction rolls back) when
    one would go over. A free or unpriced call is never held back."""
    if not estimate or estimate <= 0:
        return []
    now = now or datetime.now(UTC)
    charged: list[int] = []
    for period, prefix, limit in applicable_caps(session, url):
        ledger = ledger_id(session, period, prefix, now)
        ok = session.execute(
            text(
                "UPDATE budget_ledger SET spent_usd = spent_usd + :est, updated_at = now()"
                " WHERE id = :id AND spent_usd + :est <= :limit RETURNING spent_usd"
            ),
            {"est": estimate, "id": ledger, "limit": limit},
        ).scalar_one_or_none()
        if ok is None:
            rollover = period_end(period, period_start(period, now))
            scope = f"{prefix} " if prefix else ""
            # Wake at the rollover, or sooner to notice a cap raised by other means than
            # `pagemill budget set` (which wakes waiting documents itself).
            raise BudgetExceeded(
                f"{scope}{period} cap ${_plain(limit)} reached; the next call"
                f" (~${_plain(estimate)}) waits for the cap to be raised or the period to roll"
                " over",
                until=min(rollover, now + timedelta(seconds=recheck_s)),
            )
        charged.append(ledger)
    return charged


@dataclass(frozen=True, slots=True)
class CapStatus:
    period: str
    prefix: str
    limit_usd: Decimal
    spent_usd: Decimal
    period_start: date


def cap_status(session: Session, now: datetime | None = None) -> list[CapStatus]:
    """Every cap with what its current period has spent (for `pagemill budget show`)."""
    now = now or datetime.now(UTC)
    out = []
    for cap in session.execute(
        select(BudgetCap).order_by(BudgetCap.prefix, BudgetCap.period)
    ).scalars():
        ledger = session.get(BudgetLedger, ledger_id(session, cap.period, cap.prefix, now))
        spent = ledger.spent_usd if ledger is not None else Decimal(0)
        out.append(
            CapStatus(cap.period, cap.prefix, cap.limit_usd, spent, period_start(cap.period, now))
        )
    return out


def set_cap(session: Session, period: str, prefix: str, limit_usd: Decimal) -> None:
    if period not in (DAY, MONTH):
        raise ValueError(f"period must be {DAY} or {MONTH}, not {period!r}")
    if limit_usd < 0:
        raise ValueError("a cap cannot be negative")
    stmt = insert(BudgetCap).values(
        period=period, prefix=normalise_prefix(prefix), limit_usd=limit_usd
    )
    session.execute(
        stmt.on_conflict_do_update(
            constraint="uq_budget_caps_period_prefix",
            set_={"limit_usd": stmt.excluded.limit_usd, "updated_at": func.now()},
        )
    )
    # Open the current period's ledger now, with what the scope spent so far.
    ledger_id(session, period, normalise_prefix(prefix), datetime.now(UTC))


def remove_cap(session: Session, period: str, prefix: str) -> bool:
    removed = session.execute(
        text("DELETE FROM budget_caps WHERE period = :p AND prefix = :x RETURNING id"),
        {"p": period, "x": normalise_prefix(prefix)},
    ).scalar_one_or_none()
    return removed is not None
