"""`pagemill costs`, `pagemill budget`, `pagemill circuits`, `pagemill batches`: cost reports,
spending caps set at run time, circuit states, the batch queue."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

import typer

from pipeline.cost.reports import AGGREGATES, CostRow, GroupBy, cost_report, money
from workers.cli.shared import session_factory, settings_or_exit


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


_RELATIVE = re.compile(r"^(\d+)\s*([dhm])$")


def parse_since(value: str | None) -> datetime | None:
    """`2026-12-01`, an ISO date-time, or a span back from now: `7d`, `24h`, `30m` (UTC)."""
    if value is None:
        return None
    found = _RELATIVE.match(value.strip().lower())
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        span = {"d": timedelta(days=amount), "h": timedelta(hours=amount)}.get(
            unit, timedelta(minutes=amount)
        )
        return datetime.now(UTC) - span
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: use a date (2026-12-01), a date-time, or a span such as 7d or 24h"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _sessions() -> Any:
    return session_factory(settings_or_exit())


def _percent(part: Any, whole: Any) -> str:
    whole = Decimal(whole or 0)
    return "-" if whole == 0 else f"{Decimal(part or 0) * 100 / whole:.0f}%"


def _record(row: CostRow) -> dict[str, Any]:
    out: dict[str, Any] = {k: (str(v) if v is not None else None) for k, v in row.group.items()}
    for name, _ in AGGREGATES:
        value = row.figures[name]
        out[name] = money(value) if name.endswith("_usd") else int(value or 0)
    return out


def costs(
    by: Annotated[
        GroupBy, typer.Option("--by", help="Group by day, model, schema, prefix or document.")
    ] = GroupBy.DAY,
    since: Annotated[
        str | None, typer.Option(help="Only calls since: 2026-12-01, an ISO time, or 7d / 24h.")
    ] = None,
    output_format: Annotated[Format, typer.Option("--format")] = Format.TABLE,
) -> None:
    """What model calls cost, what the page cache, cascade, batch discount and prompt caching
    saved, and how good the estimates were (the cost_by_* views hold the same numbers)."""
    started = parse_since(since)
    with _sessions()() as session:
        rows = cost_report(session, by, started)
    records = [_record(r) for r in rows]
    if output_format is Format.JSON:
        typer.echo(json.dumps(records, indent=2))
        return
    if output_format is Format.CSV:
        buf = io.StringIO()
        if records:
            writer = csv.DictWriter(buf, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        typer.echo(buf.getvalue(), nl=False)
        return
    _costs_table(by, rows, started)


def _costs_table(by: GroupBy, rows: list[CostRow], since: datetime | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"cost by {by.value}" + (f" since {since:%Y-%m-%d %H:%M} UTC" if since else "")
    )
    headers = (
        "calls",
        "pages",
        "cost $",
        "saved: cache $",
        "cascade $",
        "batch $",
        "prompt cache $",
        "escalated",
        "cache hits",
        "prompt-cache hit rate",
        "estimate / actual $",
    )
    for name in (
        *(", ".join(["provider", "model"]) if by is GroupBy.MODEL else by.value,),
        *headers,
    ):
        table.add_column(name, overflow="fold", justify="left" if name in (by.value,) else "right")
    totals: dict[str, Decimal] = {name: Decimal(0) for name, _ in AGGREGATES}
    for row in rows:
        f = row.figures
        for name in totals:
            totals[name] += Decimal(f[name] or 0)
        table.add_row(*_cells(" ".join(str(v) for v in row.group.values()), f))
    console = Console(width=max(180, Console().width))
    console.print(table)
    console.print(
        "total: "
        + "  ".join(_cells("", totals)[1:4])
        + f" (cost $), saved ${money(totals['saved_usd'])}; "
        + f"unpriced calls: {int(totals['unpriced_calls'])}. Money in USD."
    )


def _cells(label: str, f: dict[str, Any]) -> list[str]:
    return [
        label,
        str(int(f["calls"] or 0)),
        str(int(f["pages"] or 0)),
        money(f["cost_usd"]),
        money(f["saved_page_cache_usd"]),
        money(f["saved_cascade_usd"]),
        money(f["saved_batch_usd"]),
        money(f["saved_prompt_cache_usd"]),
        f"{int(f['escalated_pages'] or 0)}/{int(f['cascade_pages'] or 0)} "
        f"({_percent(f['escalated_pages'], f['cascade_pages'])})",
        str(int(f["cache_hits"] or 0)),
        f"{_percent(f['prompt_cache_hits'], f['prompt_cache_marked'])} "
        f"of {int(f['prompt_cache_marked'] or 0)}",
        f"{money(f['estimated_cost_usd'])} / {money(f['actual_cost_usd'])}",
    ]


# --- budget ------------------------------------------------------------------------------------

budget_app = typer.Typer(
    help="Spending caps per day and month, for everything or a bucket prefix (a tenant). "
    "A call that would go over is not made: the document waits as budget_exceeded and "
    "resumes when the cap is raised or the period rolls over. Changes apply at once, "
    "without a restart."
)


def _usd(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not an amount in USD") from None
    if amount < 0 or not amount.is_finite():
        raise typer.BadParameter("a cap is a non-negative amount")
    return amount


@budget_app.command("set")
def budget_set(
    period: Annotated[Period, typer.Argument(help="day or month (UTC).")],
    usd: Annotated[str, typer.Argument(help="The cap in USD, e.g. 50 or 12.5.")],
    prefix: Annotated[
        str, typer.Option(help="Only objects under s3://bucket/prefix (a tenant); default: all.")
    ] = "",
) -> None:
    """Set (or raise, or lower) a cap; documents it was holding back resume at once."""
    from pipeline.cost import budget
    from pipeline.db.session import transaction

    amount = _usd(usd)
    sessions = _sessions()
    with transaction(sessions) as session:
        budget.set_cap(session, period.value, prefix, amount)
    woken = _wake_budget_waiters(sessions)
    scope = budget.normalise_prefix(prefix) or "all documents"
    typer.echo(f"{period.value} cap for {scope}: ${money(amount, 2)}; {woken} document(s) resumed")


@budget_app.command("remove")
def budget_remove(
    period: Annotated[Period, typer.Argument(help="day or month.")],
    prefix: Annotated[str, typer.Option(help="The cap's prefix; default: the global cap.")] = "",
) -> None:
    """Remove a cap; documents it was holding back resume at once."""
    from pipeline.cost import budget
    from pipeline.db.session import transaction

    sessions = _sessions()
    with transaction(sessions) as session:
        removed = budget.remove_cap(session, period.value, prefix)
    if not removed:
        typer.echo("no such cap", err=True)
        raise typer.Exit(1)
    woken = _wake_budget_waiters(sessions)
    typer.echo(f"cap removed; {woken} document(s) resumed")


@budget_app.command("show")
def budget_show(
    output_format: Annotated[Format, typer.Option("--format")] = Format.TABLE,
) -> None:
    """Every cap with what its current period has spent, and how many documents wait."""
    from pipeline.cost import budget
    from pipeline.db.session import transaction

    sessions = _sessions()
    from pipeline.cost.waiting import BUDGET_EXCEEDED, waiting_count

    with transaction(sessions) as session:
        caps = budget.cap_status(session)
        waiting = waiting_count(session, BUDGET_EXCEEDED)
    records = [
        {
            "period": c.period,
            "since": c.period_start.isoformat(),
            "prefix": c.prefix or "*",
            "cap_usd": money(c.limit_usd, 2),
            "spent_usd": money(c.spent_usd),
            "left_usd": money(max(c.limit_usd - c.spent_usd, Decimal(0))),
        }
        for c in caps
    ]
    if output_format is Format.JSON:
        typer.echo(json.dumps({"caps": records, "waiting_documents": waiting}, indent=2))
        return
    if not records:
        typer.echo("no caps set")
    for r in records:
        typer.echo(
            f"{r['period']:<5} {r['prefix']:<40} cap ${r['cap_usd']:>12}  "
            f"spent ${r['spent_usd']:>14} since {r['since']}  left ${r['left_usd']}"
        )
    typer.echo(f"{waiting} document(s) waiting as budget_exceeded")


def _wake_budget_waiters(sessions: Any) -> int:
    from pipeline.cost.waiting import BUDGET_EXCEEDED, wake_reason
    from workers.tasks.documents import enqueue_document

    return len(wake_reason(sessions, BUDGET_EXCEEDED, enqueue_document))


# --- circuits and batches -------------------------------------------------------------------------


def circuits() -> None:
    """The state of every provider and model's circuit breaker (shared by all workers)."""
    import redis

    from pipeline.cost.circuit import RedisCircuitBreaker

    settings = settings_or_exit()
    client = redis.Redis.from_url(settings.rate_limit_redis_url or settings.broker_url)
    found = RedisCircuitBreaker(client).states()
    if not found:
        typer.echo("no circuit has seen a failure: all closed")
    for (provider, model), state in sorted(found.items()):
        typer.echo(f"{provider}:{model}  {state}")


def batches(
    run: Annotated[bool, typer.Option("--run", help="Submit and collect once, now.")] = False,
) -> None:
    """Batch requests by state; with --run, one submit-and-collect cycle by hand."""
    from pipeline.cost.batch import pending_count

    if run:
        from workers.tasks.maintenance import run_batch_cycle

        report = run_batch_cycle()
        typer.echo(
            f"submitted {report.submitted} request(s) in {report.batches} batch(es); "
            f"collected {report.collected} batch(es): {report.succeeded} answered, "
            f"{report.retried} retried, {report.failed} failed; {report.held} held by a cap"
        )
    with _sessions()() as session:
        counts = pending_count(session)
    typer.echo("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no batch requests")
