"""`pagemill status`: the pipeline at a glance in a terminal, refreshed live, or once as JSON.

The numbers come from where the dashboards get them: the ops_* views in Postgres (backlog,
latency, cost, dead letters) and the Celery queues in Redis.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from pipeline.money import json_default, usd
from pipeline.settings import Settings
from pipeline.usecases.ops_status import StatusSnapshot, snapshot

STAGES = ("prepare", "extract")


class StatusUnavailable(RuntimeError):
    """Postgres could not be read (the message says why, on one line)."""


def collect(settings: Settings, sessions: Any) -> dict[str, Any]:
    """One snapshot as plain data (the JSON of `--once --format json`)."""
    import redis

    from workers.telemetry import queue_depths

    try:
        with sessions() as session:
            snap = snapshot(session)
    except SQLAlchemyError as exc:
        raise StatusUnavailable(" ".join(str(exc).split())[:300]) from None
    try:
        depths: dict[str, int] | None = queue_depths(settings.broker_url)
    except redis.RedisError:
        depths = None  # shown as unknown; the database numbers still stand
    return _as_data(snap, depths)


def _as_data(snap: StatusSnapshot, depths: dict[str, int] | None) -> dict[str, Any]:
    return {
        "at": snap.at.isoformat(timespec="seconds"),
        "queues": depths,
        "in_flight": snap.in_flight,
        "backlog": snap.backlog,
        "oldest_pending_age_s": round(snap.oldest_pending_age_s, 1),
        "window_minutes": snap.window_min,
        "pages_per_minute": round(snap.pages_per_minute, 2),
        "documents_per_minute": round(snap.documents_per_minute, 2),
        "finished_last_hour": snap.finished_last_hour,
        "stage_latency": [asdict(row) for row in snap.stage_latency],
        "cost_today_usd": usd(snap.cost_today_usd),
        "cost_today_by_model": {name: usd(cost) for name, cost in snap.cost_today_by_model.items()},
        "unpriced_calls_today": snap.unpriced_calls_today,
        "dead_letters": {
            "open": sum(snap.dead_letters.values()),
            "by_category": snap.dead_letters,
            "oldest_age_s": snap.oldest_dead_letter_age_s,
        },
        "stuck": snap.stuck,
    }


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=json_default)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _table(title: str, *columns: str, header: bool = True) -> Table:
    table = Table(title=title, title_justify="left", show_header=header, min_width=24)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
    return table


def render(data: dict[str, Any], interval: float | None = None) -> RenderableType:
    """The terminal view of one snapshot: panels side by side as the width allows."""
    queues = data["queues"]
    work = _table("work", "stage", "queued", "pending", "in flight", "waiting")
    for stage in STAGES:
        backlog = data["backlog"].get(stage, {})
        other = sum(n for status, n in backlog.items() if status not in ("pending", "processing"))
        work.add_row(
            stage,
            "?" if queues is None else str(queues.get(stage, 0)),
            str(backlog.get("pending", 0)),
            str(data["in_flight"].get(stage, 0)),
            str(other),
        )

    flow = _table(f"flow (rates: last {data['window_minutes']} min)", "", "", header=False)
    flow.add_row("pages/min", f"{data['pages_per_minute']:.1f}")
    flow.add_row("documents/min", f"{data['documents_per_minute']:.1f}")
    finished = data["finished_last_hour"]
    for status, style in (("done", "green"), ("needs_review", "yellow"), ("failed", "red")):
        flow.add_row(f"{status}, last hour", Text(str(finished.get(status, 0)), style=style))
    flow.add_row("oldest pending", _seconds(data["oldest_pending_age_s"] or None))
    flow.add_row("stuck", Text(str(data["stuck"]), style="red" if data["stuck"] else ""))

    latency = _table("stage latency (24 h)", "stage", "p50", "p95", "p99", "n")
    for row in data["stage_latency"]:
        latency.add_row(
            row["stage"],
            _seconds(row["p50_s"]),
            _seconds(row["p95_s"]),
            _seconds(row["p99_s"]),
            str(row["samples"]),
        )

    cost = _table("cost today (UTC)", "", "", header=False)
    for model, amount in data["cost_today_by_model"].items():
        cost.add_row(model, f"${usd(amount, 4)}")
    cost.add_row(Text("total", style="bold"), Text(f"${usd(data['cost_today_usd'], 4)}"))
    if data["unpriced_calls_today"]:
        cost.add_row("calls without a price", str(data["unpriced_calls_today"]), style="yellow")

    letters = data["dead_letters"]
    dead = _table("dead letters", "", "", header=False)
    for category, count in sorted(letters["by_category"].items()):
        dead.add_row(category, str(count), style="red")
    dead.add_row(Text("open", style="bold"), str(letters["open"]))
    if letters["oldest_age_s"] is not None:
        dead.add_row("oldest", _seconds(letters["oldest_age_s"]))

    refresh = f"every {interval:g} s, Ctrl-C to quit" if interval else "once"
    header = Text(f"pagemill status  {data['at']}  ({refresh})", style="bold")
    if queues is None:
        header.append("  Redis unreachable: queue depths unknown", style="yellow")
    return Group(header, Columns([work, flow, dead, latency, cost], padding=(1, 2)))


def run(settings: Settings, sessions: Any, *, once: bool, as_json: bool, interval: float) -> int:
    """Print one snapshot (`once`), or refresh the view until Ctrl-C. Returns the exit code."""
    console = Console()
    if once:
        data = collect(settings, sessions)
        if as_json:
            print(to_json(data))  # plain, for scripts: no colours, no wrapping
        else:
            console.print(render(data))
        return 0
    with Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                try:
                    view: RenderableType = render(collect(settings, sessions), interval)
                except StatusUnavailable as exc:
                    view = Text(f"database unavailable, retrying: {exc}", style="red")
                live.update(view, refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0
