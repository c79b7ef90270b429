"""Receipt rules over positioned words: shop name, date, totals, tax, currency and items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.rules.invoice import PageWords, Reread


@dataclass(slots=True)
class ReceiptFields:
    merchant_name: str | None = None
    confidence: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"merchant_name": self.merchant_name}


def extract_receipt(pages: Sequence[PageWords], reread: Reread | None = None) -> ReceiptFields:
    return ReceiptFields()
