"""Money in output: plain decimals, never scientific notation, unknown never shown as free."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from pipeline.costing import load_price_table
from pipeline.domain import Usage
from pipeline.money import json_default, usd


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        (Decimal("0E-8"), None, "0.00000000"),
        (Decimal("1.5E-7"), None, "0.00000015"),
        (Decimal("-0E-8"), None, "0.00000000"),
        (Decimal("12.34500000"), None, "12.34500000"),
        (Decimal("1E+3"), None, "1000"),
        (Decimal("0.000123456"), 6, "0.000123"),
        (Decimal("0.0000125"), 6, "0.000012"),  # half even, as the database rounds
        (Decimal("0E-8"), 4, "0.0000"),
        (0, 2, "0.00"),
        ("0.1", None, "0.1"),
        (None, None, ""),
    ],
)
def test_usd(value: Decimal | int | str | None, places: int | None, expected: str) -> None:
    assert usd(value, places) == expected


def test_a_free_call_costs_a_plain_zero_in_json() -> None:
    # The local extractor's cost, as the price table computes it, is Decimal("0E-8").
    cost = load_price_table().cost("local", "local-rules-1", Usage())
    assert cost is not None and str(cost) == "0E-8"  # what the CLI printed before
    assert json.dumps({"cost_usd": cost}, default=json_default) == '{"cost_usd": "0.00000000"}'
