"""The invoice rules' answer: the fields found, in the invoice schema's JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from pipeline.rules.answer import schema_json


@dataclass(slots=True)
class InvoiceFields:
    """The rules' answer; `as_dict` gives the invoice schema's JSON shape."""

    invoice_number: str | None = None
    invoice_date: date | None = None
    due_date: date | None = None
    vendor_name: str | None = None
    vendor_address: str | None = None
    customer_name: str | None = None
    currency: str | None = None
    subtotal: Decimal | None = None
    tax: Decimal | None = None
    total: Decimal | None = None
    line_items: list[dict[str, Any]] = field(default_factory=list)
    # Field -> 0..1, how well the evidence for the value held up (see `_confidence` in extract.py).
    confidence: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return schema_json(self)
