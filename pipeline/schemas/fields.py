"""Field types and normalisers shared by the built-in schemas."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field

from pipeline.currencies import ISO_4217

Amount = Annotated[Decimal, Field(max_digits=18, decimal_places=4)]


def iso_currency_code(value: str | None) -> str | None:
    """`value` as an upper-case ISO 4217 code; ValueError when it is not one."""
    if value is None:
        return None
    code = value.strip().upper()
    if code not in ISO_4217:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return code


def clean_text(value: str | None) -> str | None:
    """Stripped text, with blank turned into None (models answer "" for "not on the page")."""
    if value is None:
        return None
    value = value.strip()
    return value or None
