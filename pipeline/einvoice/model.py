"""What an e-invoice says, mapped onto the invoice schema, plus the arithmetic it declares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

_SCHEMA_PLACES = Decimal("0.0001")  # the invoice schema keeps amounts to 4 decimal places


@dataclass(slots=True)
class EInvoiceLine:
    """One invoice line as the XML states it."""

    description: str | None
    quantity: Decimal | None
    unit_price: Decimal | None  # net price for `basis_quantity` units
    amount: Decimal | None  # net line amount
    basis_quantity: Decimal | None = None  # price per this many units (CII BasisQuantity)
    allowances: Decimal = Decimal(0)  # line-level allowances (reduce the amount)
    charges: Decimal = Decimal(0)  # line-level charges (increase it)

    def as_schema(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "quantity": _plain(self.quantity, money=False),
            "unit_price": _plain(self.unit_price),
            "amount": _plain(self.amount),
        }


@dataclass(slots=True)
class EInvoice:
    """A structured invoice read from CII or UBL XML.

    `standard` names what was read in words ("Factur-X EN 16931 (CII)"); `model` is the short
    id recorded as the extraction's model (e.g. "cii-d16b:en16931"). Totals follow EN 16931:
    line_total = sum of line amounts (BT-106), tax_basis = line_total - allowances + charges
    (BT-109), grand_total = tax_basis + tax (BT-112), due = grand_total - prepaid + rounding.
    """

    syntax: str  # "CII" or "UBL"
    standard: str
    model: str
    guideline: str | None
    type_code: str | None
    invoice_number: str | None = None
    invoice_date: date | None = None
    due_date: date | None = None
    vendor_name: str | None = None
    vendor_address: str | None = None
    customer_name: str | None = None
    currency: str | None = None
    line_total: Decimal | None = None
    allowance_total: Decimal | None = None
    charge_total: Decimal | None = None
    tax_basis: Decimal | None = None
    tax: Decimal | None = None
    grand_total: Decimal | None = None
    prepaid: Decimal | None = None
    rounding: Decimal | None = None
    due_payable: Decimal | None = None
    lines: list[EInvoiceLine] = field(default_factory=list)

    def as_schema(self) -> dict[str, Any]:
        """The invoice schema's fields (JSON-ready: ISO dates, amounts as strings)."""
        return {
            "invoice_number": self.invoice_number,
            "invoice_date": self.invoice_date.isoformat() if self.invoice_date else None,
            "due_date": self.due_date.isoformat() if self.due_date else None,
            "vendor_name": self.vendor_name,
            "vendor_address": self.vendor_address,
            "customer_name": self.customer_name,
            "currency": self.currency,
            "subtotal": _plain(self.tax_basis if self.tax_basis is not None else self.line_total),
            "tax": _plain(self.tax),
            "total": _plain(self.grand_total),
            "line_items": [line.as_schema() for line in self.lines],
        }


def parse_decimal(text: str | None) -> Decimal | None:
    """An XML decimal (`1234.50`, `-3`, ` 7.0000 `); None when absent or not a number."""
    if text is None or not text.strip():
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_date(text: str | None, fmt: str | None = None) -> date | None:
    """CII `DateTimeString` (format 102 = YYYYMMDD) or an ISO date (UBL, or CII without a
    format); None for anything else (610 = a month, 616 = a week: not a day)."""
    if text is None:
        return None
    raw = text.strip()
    try:
        if fmt in (None, "", "102") and len(raw) == 8 and raw.isdigit():
            return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
        if fmt in (None, "") and len(raw) >= 10:
            return date.fromisoformat(raw[:10])
    except ValueError:
        return None
    return None


def clean(text: str | None) -> str | None:
    """Whitespace collapsed; blank is None."""
    if text is None:
        return None
    joined = " ".join(text.split())
    return joined or None


def _plain(value: Decimal | None, *, money: bool = True) -> str | None:
    """A decimal as the schema stores it: XML writes `25.0000` for 25 units and `49.2900` for
    a price; amounts keep at least cents, quantities drop trailing zeros, and more than 4
    places are rounded to the schema's precision."""
    if value is None:
        return None
    if _places(value) > 4:
        value = value.quantize(_SCHEMA_PLACES, rounding=ROUND_HALF_UP)
    places = max(2 if money else 0, _places(value.normalize()))
    return str(value.quantize(Decimal(1).scaleb(-places)))


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0
