"""The e-invoice reader: a Factur-X / ZUGFeRD / XRechnung / Peppol invoice's own XML as the
result, exact and free, cross-checked against the printed page.

No model is called: the one "call" is recorded with cost 0 (like the offline extractor's).
Fields the XML does not carry (a MINIMUM profile has no lines, some senders leave out the
seller's name) are read from the page by the offline rules. When a value of the XML is not
printed on the page, the review reason gives both: what the XML says and what the page shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pipeline.checks import RuleFailure, as_amount, close_enough
from pipeline.domain import ExtractionRequest, ProviderReply, Usage
from pipeline.einvoice import EInvoice
from pipeline.errors import ErrorCategory, PermanentError, PipelineError
from pipeline.evaluation import score_field
from pipeline.extractors import build_extractor, register
from pipeline.extractors.base import Extractor
from pipeline.settings import Settings

log = logging.getLogger(__name__)

PROVIDER = "einvoice"
SCHEMA = "invoice"  # the schema e-invoices map onto

# Header fields read from the page when the XML lacks them.
_HEADER = (
    "invoice_number",
    "invoice_date",
    "due_date",
    "vendor_name",
    "customer_name",
    "currency",
    "subtotal",
    "tax",
    "total",
)
# What an invoice must print as its XML says (what is booked and paid). The other fields
# disagree only when the page shows another value: a page need not print a due date, and
# many print no unit prices, or other words for a line, than the XML.
_MUST_BE_PRINTED = frozenset(
    {"invoice_number", "invoice_date", "vendor_name", "currency", "tax", "total"}
)
# The same comparison `pagemill eval` scores with; its names for our fields.
_SCORED_AS = {"invoice_date": "date", "due_date": "date"}
_CENTS = Decimal("0.02")


class EInvoiceExtractor:
    """Reads one document's e-invoice XML. Built per document (`for_invoice`); the registered
    factory builds one without XML, which refuses documents that carry none."""

    provider = PROVIDER
    can_reask = False  # the XML says what it says
    runs_locally = True  # no network: the prepare stage finishes the document
    max_tokens: int | None = None  # no model: nothing to budget

    def __init__(self, invoice: EInvoice | None = None, page_reader: Extractor | None = None):
        self.invoice = invoice
        self.model = invoice.model if invoice is not None else "cii-ubl"
        self._page_reader = page_reader
        self._page: dict[str, Any] = {}  # what the page reading found, for the cross-check
        self.from_page: list[str] = []  # fields the XML lacked, taken from the page

    @classmethod
    def for_invoice(cls, invoice: EInvoice, settings: Settings) -> EInvoiceExtractor:
        return cls(invoice, page_reader=build_extractor(settings, "local"))

    def __repr__(self) -> str:
        return f"EInvoiceExtractor(model={self.model!r})"

    def call(self, request: ExtractionRequest) -> ProviderReply:
        if self.invoice is None:
            raise PermanentError(
                ErrorCategory.BAD_INPUT,
                "this document carries no e-invoice XML; the einvoice provider reads only "
                "Factur-X / ZUGFeRD PDFs and XRechnung / Peppol XML (CII or UBL): configure "
                "another provider for other documents",
            )
        if request.schema.name != SCHEMA:
            raise PermanentError(
                ErrorCategory.CONFIGURATION,
                f"an e-invoice maps onto the {SCHEMA!r} schema, not {request.schema.name!r}",
            )
        data = self.invoice.as_schema()
        if request.pages and self._page_reader is not None:
            self._page = self._read_page(request, self._page_reader)
            self._fill_from_page(data)
        return ProviderReply(data=data, usage=Usage(), request_id=None, stop_reason="xml")

    def _read_page(self, request: ExtractionRequest, reader: Extractor) -> dict[str, Any]:
        try:
            reply = reader.call(request)
        except PipelineError as exc:
            log.warning("page reading for the e-invoice cross-check failed: %s", exc)
            return {}
        return reply.data or {}

    def _fill_from_page(self, data: dict[str, Any]) -> None:
        """Fields the XML leaves empty, from the page. Lines only when the page's lines add
        up to the XML's own line total: a guess is worse than none."""
        for name in (*_HEADER, "vendor_address"):
            if data.get(name) is None and self._page.get(name) is not None:
                data[name] = self._page[name]
                self.from_page.append(name)
        lines = self._page.get("line_items") or []
        if data.get("line_items") or not lines or self.invoice is None:
            return
        target = self.invoice.line_total
        amounts = [as_amount(line.get("amount")) for line in lines]
        if target is None or any(a is None for a in amounts):
            return
        if close_enough(sum((a for a in amounts if a is not None), Decimal(0)), target, _CENTS):
            data["line_items"] = lines
            self.from_page.append("line_items")

    def review_reasons(
        self, data: dict[str, Any], failures: Sequence[RuleFailure], ungrounded: Sequence[str]
    ) -> list[str]:
        """The review reasons for this result: rule failures the XML does not explain, and
        every value of the XML that is not printed on the page, with what the page shows."""
        reasons = [f"rule {f.rule}: {f.message}" for f in failures if not self._explains(f, data)]
        for path in ungrounded:
            reason = self._disagreement(path, data)
            if reason:
                reasons.append(reason)
        return reasons

    def _explains(self, failure: RuleFailure, data: dict[str, Any]) -> bool:
        """A rule the schema applies to any reading that this XML satisfies in its own terms
        (EN 16931): document-level allowances and charges between the lines and the net
        total, prices per a basis quantity (per 100) and line-level allowances."""
        invoice = self.invoice
        if invoice is None or "line_items" in self.from_page:
            return False
        if failure.rule == "lines_sum_to_subtotal":
            lines = [line.amount for line in invoice.lines]
            if invoice.line_total is None or invoice.tax_basis is None or None in lines:
                return False
            total = sum((a for a in lines if a is not None), Decimal(0))
            adjusted = (
                invoice.line_total - (invoice.allowance_total or 0) + (invoice.charge_total or 0)
            )
            return close_enough(total, invoice.line_total, _CENTS) and close_enough(
                adjusted, invoice.tax_basis, _CENTS
            )
        if failure.rule == "line_quantity_times_price":
            for name in failure.fields:
                index = _line_index(name)
                if index is None or index >= len(invoice.lines):
                    return False
                line = invoice.lines[index]
                if line.quantity is None or line.unit_price is None or line.amount is None:
                    return False
                net = line.quantity * line.unit_price / (line.basis_quantity or 1)
                if not close_enough(net - line.allowances + line.charges, line.amount, _CENTS):
                    return False
            return True
        return False

    def _disagreement(self, path: str, data: dict[str, Any]) -> str | None:
        top = path.split("[", 1)[0].split(".", 1)[0]
        if top in self.from_page:
            return f"ungrounded: {path} (read from the page) was not found on any page"
        xml_value = _value_at(data, path)
        if top == "line_items":
            if not path.endswith(".amount") or _is_zero(xml_value):
                return None
            return (
                f"e-invoice XML and page disagree on {_human_path(path)}: the XML says "
                f"{xml_value}, which is not printed on the page"
            )
        page_value = self._page.get(top)
        if page_value is None:
            if top not in _MUST_BE_PRINTED or _is_zero(xml_value):
                return None  # a tax of 0 often goes unprinted; so do optional fields
            shown = "which is not printed on the page"
        elif score_field(_SCORED_AS.get(top, top), page_value, xml_value):
            return None  # the page reading found the same value: no disagreement
        else:
            shown = f"the page shows {page_value}"
        return f"e-invoice XML and page disagree on {top}: the XML says {xml_value}, {shown}"


def _is_zero(value: Any) -> bool:
    amount = as_amount(value) if isinstance(value, str) else None
    return amount is not None and amount == 0


def _line_index(path: str) -> int | None:
    if not path.startswith("line_items["):
        return None
    try:
        return int(path[len("line_items[") :].split("]", 1)[0])
    except ValueError:
        return None


def _value_at(data: dict[str, Any], path: str) -> Any:
    top, _, rest = path.partition(".")
    index = _line_index(top)
    if index is not None:
        lines = data.get("line_items") or []
        item = lines[index] if index < len(lines) else {}
        return item.get(rest) if rest else item
    return data.get(top)


def _human_path(path: str) -> str:
    """`line_items[2].amount` -> `line 3 amount`."""
    index = _line_index(path)
    if index is None:
        return path
    return f"line {index + 1} {path.partition('.')[2]}".strip()


@register(PROVIDER)
def build(settings: Settings) -> Extractor:
    # Without a document's XML: `PAGEMILL_PROVIDER=einvoice` reads e-invoices and refuses the
    # rest. Documents that carry XML get their own reader whatever the provider (see
    # pipeline/usecases/einvoice.py).
    return EInvoiceExtractor(None, page_reader=build_extractor(settings, "local"))
