"""Charts drawn on the server as SVG geometry (no JavaScript, no chart library to ship)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    bars: list[Bar]
    ticks: list[Tick]
    y_max: float
    y_label: str


def _nice_ceiling(value: float) -> float:
    """1, 2, 5 × 10^n at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def bars(
    points: list[tuple[datetime, float]],
    *,
    hours: int,
    now: datetime,
    width: int = 720,
    height: int = 160,
    unit: str = "pages/min",
) -> BarChart:
    """One bar per hour of the last `hours` hours (missing hours are zero), oldest left."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    slots = [end - timedelta(hours=h) for h in range(hours - 1, -1, -1)]
    by_hour = {p[0].astimezone(UTC): p[1] for p in points}
    values = [by_hour.get(slot, 0.0) for slot in slots]
    y_max = _nice_ceiling(max(values, default=0.0))
    left, top, bottom = 40, 8, height - 22
    step = (width - left) / max(len(slots), 1)
    chart_bars = []
    for n, (slot, value) in enumerate(zip(slots, values, strict=True)):
        bar_height = (bottom - top) * (value / y_max)
        chart_bars.append(
            Bar(
                x=round(left + n * step + 1, 1),
                y=round(bottom - bar_height, 1),
                width=round(max(step - 2, 1), 1),
                height=round(bar_height, 1),
                title=f"{slot:%Y-%m-%d %H:00} UTC: {value:.1f} {unit}",
            )
        )
    every = max(1, len(slots) // 8)
    ticks = [
        Tick(x=round(left + n * step + step / 2, 1), label=f"{slot:%H:00}")
        for n, slot in enumerate(slots)
        if n % every == 0
    ]
    return BarChart(width, height, top, bottom, chart_bars, ticks, y_max, unit)
