"""Layout-aware extraction rules over positioned words (no model, no network)."""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.rules.invoice import Box, InvoiceFields, PageWords, Reread, extract_invoice
from pipeline.rules.receipt import ReceiptFields, extract_receipt


class RulesAnswer(Protocol):
    """What a set of rules gives: the schema's JSON shape, with a confidence per field."""

    @property
    def confidence(self) -> dict[str, float]: ...

    @property
    def notes(self) -> list[str]: ...

    def as_dict(self) -> dict[str, Any]: ...


__all__ = [
    "Box",
    "InvoiceFields",
    "PageWords",
    "ReceiptFields",
    "Reread",
    "RulesAnswer",
    "extract_invoice",
    "extract_receipt",
]
