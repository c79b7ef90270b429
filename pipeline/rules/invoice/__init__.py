"""Invoice rules over positioned words: header fields, totals, parties and line items.

One module per concern; this package keeps the names the rest of pipeline imports.
"""

from __future__ import annotations

from pipeline.rules.invoice.analysis import analyse
from pipeline.rules.invoice.currency import find_currency
from pipeline.rules.invoice.dates import find_invoice_dates
from pipeline.rules.invoice.document import Box, Candidate, Doc, PageWords, Reread
from pipeline.rules.invoice.extract import extract_invoice
from pipeline.rules.invoice.fields import InvoiceFields
from pipeline.rules.invoice.invoice_number import find_invoice_number
from pipeline.rules.invoice.line_items import find_line_items
from pipeline.rules.invoice.parties import find_parties
from pipeline.rules.invoice.totals import find_totals
from pipeline.rules.invoice.values import Amount, amounts_in

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
