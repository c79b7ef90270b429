"""Money in output: plain decimals (never `0E-8`), one helper for every table, CSV and JSON."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def usd(value: Decimal | float | int | str | None, places: int | None = None) -> str:
    """A dollar amount as a plain decimal string: `0E-8` → "0.00000000", `1.5E-7` →
    "0.00000015". `places` rounds (half even) for display; None keeps every digit the value has.
    None (unknown, e.g. no price for the model) → "" so that it never reads as free."""
    if value is None:
        return ""
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    if places is not None:
        amount = amount.quantize(Decimal(1).scaleb(-places))
    # Format "f" never uses an exponent; a negative zero is still zero.
    text = format(amount, "f")
    return text[1:] if text.startswith("-") and amount.is_zero() else text


def json_default(value: Any) -> Any:
    """For `json.dumps(default=...)`: Decimals as plain decimal strings (exact, as our JSON
    output always gave money), anything else as its str()."""
    if isinstance(value, Decimal):
        return usd(value)
    return str(value)
