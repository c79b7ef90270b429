"""How the dashboard prints money, durations and its hourly chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from workers.web.charts import bars
from workers.web.rendering import money, seconds


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("0E-8"), "0.00"),
        (Decimal("0"), "0.00"),
        (Decimal("1.5E-7"), "0.00000015"),
        (Decimal("0.01250000"), "0.0125"),
        (Decimal("12"), "12.00"),
        (Decimal("1234567.891"), "1234567.891"),
        (None, "–"),
    ],
)
def test_money_is_a_plain_decimal(value: Decimal | None, shown: str) -> None:
    assert money(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.25, "250 ms"), (2.34, "2.3 s"), (125, "2 min 5 s"), (7260, "2 h 1 min"), (None, "–")],
)
def test_durations_read_as_people_say_them(value: float | None, shown: str) -> None:
    assert seconds(value) == shown


def test_the_hourly_chart_has_one_bar_per_hour_and_zero_for_quiet_hours() -> None:
    now = datetime(2026, 12, 4, 14, 37, tzinfo=UTC)
    busy = now.replace(minute=0) - timedelta(hours=2)
    chart = bars([(busy, 3.0)], hours=6, now=now)
    assert len(chart.bars) == 6
    heights = [b.height for b in chart.bars]
    assert heights[3] == max(heights) > 0
    assert [h for n, h in enumerate(heights) if n != 3] == [0.0] * 5
    assert chart.y_max == 5.0  # the next round number above 3
    assert chart.bars[3].title.startswith("2026-12-04 12:00 UTC: 3.0")
