"""The invoice rules' entry point: every rule run over a document, and the confidence per field."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.rules.invoice.analysis import analyse
from pipeline.rules.invoice.currency import find_currency
from pipeline.rules.invoice.dates import find_invoice_dates
from pipeline.rules.invoice.document import PageWords, Reread
from pipeline.rules.invoice.fields import InvoiceFields
from pipeline.rules.invoice.invoice_number import find_invoice_number
from pipeline.rules.invoice.line_items import find_line_items
from pipeline.rules.invoice.parties import find_parties
from pipeline.rules.invoice.totals import find_totals


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
