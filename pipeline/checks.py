"""Business rules declared with a schema: checks a valid record must also pass to be trusted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from pipeline.currencies import ISO_4217


@dataclass(frozen=True, slots=True)
class RuleFailure:
    rule: str
    fields: tuple[str, ...]  # the fields a re-ask should look at again
    message: str


Rule = Callable[[dict[str, Any]], list[RuleFailure]]


def as_amount(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def close_enough(a: Decimal, b: Decimal, tolerance: Decimal) -> bool:
    # Rounding per line or per tax rate leaves a few cents; allow that, and 0.1 % on big sums.
    return abs(a - b) <= max(tolerance, abs(b) * Decimal("0.001"))


def lines_sum_to_subtotal(tolerance: Decimal = Decimal("0.05")) -> Rule:
    def check(data: dict[str, Any]) -> list[RuleFailure]:
        subtotal = as_amount(data.get("subtotal"))
        amounts = [as_amount(item.get("amount")) for item in data.get("line_items") or []]
        if subtotal is None or not amounts or any(a is None for a in amounts):
            return []
        total = sum((a for a in amounts if a is not None), Decimal(0))
        if close_enough(total, subtotal, tolerance):
            return []
        return [
            RuleFailure(
                "lines_sum_to_subtotal",
                ("line_items", "subtotal"),
                f"line items sum to {total} but the subtotal is {subtotal}",
            )
        ]

    return check


def subtotal_plus_tax_is_total(tolerance: Decimal = Decimal("0.02")) -> Rule:
    def check(data: dict[str, Any]) -> list[RuleFailure]:
        subtotal, tax, total = (as_amount(data.get(k)) for k in ("subtotal", "tax", "total"))
        if subtotal is None or tax is None or total is None:
            return []
        if close_enough(subtotal + tax, total, tolerance):
            return []
        return [
            RuleFailure(
                "subtotal_plus_tax_is_total",
                ("subtotal", "tax", "total"),
                f"subtotal {subtotal} + tax {tax} = {subtotal + tax}, but the total is {total}",
            )
        ]

    return check


def line_quantity_times_price(tolerance: Decimal = Decimal("0.05")) -> Rule:
    def check(data: dict[str, Any]) -> list[RuleFailure]:
        failures = []
        for n, item in enumerate(data.get("line_items") or []):
            qty, price, amount = (
                as_amount(item.get(k)) for k in ("quantity", "unit_price", "amount")
            )
            if qty is None or price is None or amount is None:
                continue
            if not close_enough(qty * price, amount, tolerance):
                failures.append(
                    RuleFailure(
                        "line_quantity_times_price",
                        (f"line_items[{n}]",),
                        f"line {n + 1}: {qty} x {price} = {qty * price}, "
                        f"but the amount is {amount}",
                    )
                )
        return failures

    return check


def plausible_dates(
    fields: Sequence[str] = ("invoice_date", "due_date"),
    earliest: date = date(1990, 1, 1),
    future: timedelta = timedelta(days=400),
) -> Rule:
    def check(data: dict[str, Any]) -> list[RuleFailure]:
        failures = []
        latest = date.today() + future
        parsed: dict[str, date] = {}
        for name in fields:
            raw = data.get(name)
            if raw is None:
                continue
            value = raw if isinstance(raw, date) else date.fromisoformat(str(raw))
            parsed[name] = value
            if not earliest <= value <= latest:
                failures.append(
                    RuleFailure("plausible_dates", (name,), f"{name} {value} is implausible")
                )
        issued, due = parsed.get("invoice_date"), parsed.get("due_date")
        if issued and due and due < issued:
            failures.append(
                RuleFailure(
                    "plausible_dates",
                    ("invoice_date", "due_date"),
                    f"due date {due} is before the invoice date {issued}",
                )
            )
        return failures

    return check


def iso_currency(field: str = "currency") -> Rule:
    def check(data: dict[str, Any]) -> list[RuleFailure]:
        value = data.get(field)
        if value is None or str(value).upper() in ISO_4217:
            return []
        return [RuleFailure("iso_currency", (field,), f"{value!r} is not an ISO 4217 code")]

    return check


def run_rules(rules: Sequence[Rule], data: dict[str, Any]) -> list[RuleFailure]:
    failures: list[RuleFailure] = []
    for rule in rules:
        failures.extend(rule(data))
    return failures
