"""Invoice rules over positioned words: header fields, totals, parties and line items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from pipeline.rules.invoice.analysis import analyse
from pipeline.rules.invoice.currency import find_currency
from pipeline.rules.invoice.dates import find_invoice_dates
from pipeline.rules.invoice.document import Box, Candidate, Doc, PageWords, Reread
from pipeline.rules.invoice.invoice_number import find_invoice_number
from pipeline.rules.invoice.line_items import find_line_items
from pipeline.rules.invoice.parties import find_parties
from pipeline.rules.invoice.totals import find_totals
from pipeline.rules.invoice.values import Amount, amounts_in
from pipeline.text.amounts import format_amount


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
    # Field -> 0..1, how well the evidence for the value held up (see `_confidence`).
    confidence: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def amount(value: Decimal | None) -> str | None:
            return None if value is None else format_amount(value)

        return {
            "invoice_number": self.invoice_number,
            "invoice_date": self.invoice_date.isoformat() if self.invoice_date else None,
            "due_date": self.due_date.isoformat() if self.due_date else None,
            "vendor_name": self.vendor_name,
            "vendor_address": self.vendor_address,
            "customer_name": self.customer_name,
            "currency": self.currency,
            "subtotal": amount(self.subtotal),
            "tax": amount(self.tax),
            "total": amount(self.total),
            "line_items": self.line_items,
        }


def extract_invoice(pages: Sequence[PageWords], reread: Reread | None = None) -> InvoiceFields:
    """Run every rule over a document's pages (words in points, top-left origin). `reread`
    lets the rules ask OCR again for one small region whose value came out garbled."""
    doc = analyse(pages)
    doc.reread = reread
    result = InvoiceFields()
    if not doc.lines:
        return result
    number, number_line = find_invoice_number(doc)
    result.invoice_number = number
    result.invoice_date, result.due_date = find_invoice_dates(doc, number_line)
    result.subtotal, result.tax, result.total = find_totals(doc)
    result.currency = find_currency(doc)
    result.vendor_name, result.vendor_address, result.customer_name = find_parties(doc)
    result.line_items = find_line_items(doc)
    result.confidence = _confidence(result, doc.evidence)
    return result


def _confidence(result: InvoiceFields, evidence: dict[str, float]) -> dict[str, float]:
    """Evidence as 0..1 per filled field: a specific label with agreeing amounts is 1.0, a
    generic label about 0.67, a value found by position only or as a last resort below 0.5
    (then the document goes to review)."""
    values = result.as_dict()
    return {
        name: round(max(0.0, min(1.0, strength / 3.0)), 2)
        for name, strength in evidence.items()
        if values.get(name) is not None
    }


__all__ = [
    "Amount",
    "Box",
    "Candidate",
    "Doc",
    "InvoiceFields",
    "PageWords",
    "Reread",
    "amounts_in",
    "analyse",
    "extract_invoice",
    "find_currency",
    "find_invoice_dates",
    "find_invoice_number",
    "find_line_items",
    "find_parties",
    "find_totals",
]
