"""Which invoice went into which object, and a fake-server responder that answers with it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.synthetic import make_invoice, render_pdf
from tests.support.fake_model_server import RecordedRequest, Scripted, reply

_INVOICE_NUMBER = re.compile(r"INV-\d{4}-\d{5}")


@dataclass
class InvoiceBook:
    """Which invoice went into which object, and a fake-server responder that answers with it."""

    by_number: dict[str, dict[str, Any]] = field(default_factory=dict)
    key_by_number: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, seed: int) -> bytes:
        invoice = make_invoice(seed)
        self.by_number[invoice.invoice_number] = invoice.expected()
        self.key_by_number[invoice.invoice_number] = key
        return render_pdf(invoice)

    def number_in(self, request: RecordedRequest) -> str | None:
        for number in _INVOICE_NUMBER.findall(request.prompt_text()):
            if number in self.by_number:
                return number
        return None

    def key_for(self, request: RecordedRequest) -> str | None:
        number = self.number_in(request)
        return self.key_by_number.get(number) if number else None

    def responder(self, request: RecordedRequest) -> Scripted | None:
        number = self.number_in(request)
        return reply(fields=self.by_number[number]) if number else None
