"""OASIS UBL 2.1 Invoice and CreditNote: Peppol BIS Billing 3.0, XRechnung (UBL), EN 16931."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from xml.etree.ElementTree import Element

from pipeline.einvoice.model import EInvoice, EInvoiceLine, clean, parse_date, parse_decimal

INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
_NS = {"cac": CAC, "cbc": CBC}

ROOTS = {
    f"{{{INVOICE_NS}}}Invoice": ("Invoice", "InvoiceLine", "InvoicedQuantity"),
    f"{{{CREDIT_NOTE_NS}}}CreditNote": ("CreditNote", "CreditNoteLine", "CreditedQuantity"),
}


def read_ubl(root: Element) -> EInvoice:
    """Map a UBL Invoice or CreditNote onto the invoice schema's fields."""
    kind, line_tag, quantity_tag = ROOTS[root.tag]
    customization = clean(_text(root, "cbc:CustomizationID"))
    currency = clean(_text(root, "cbc:DocumentCurrencyCode"))
    totals = root.find("cac:LegalMonetaryTotal", _NS)
    supplier = root.find("cac:AccountingSupplierParty/cac:Party", _NS)
    customer = root.find("cac:AccountingCustomerParty/cac:Party", _NS)
    standard, profile = _describe(customization, kind)
    return EInvoice(
        syntax="UBL",
        standard=standard,
        model=f"ubl-2.1:{profile}",
        guideline=customization,
        type_code=clean(_text(root, f"cbc:{kind}TypeCode")),
        invoice_number=clean(_text(root, "cbc:ID")),
        invoice_date=parse_date(_text(root, "cbc:IssueDate")),
        due_date=_due_date(root),
        vendor_name=_party_name(supplier),
        vendor_address=_address(supplier),
        customer_name=_party_name(customer),
        currency=currency,
        line_total=_amount(totals, "cbc:LineExtensionAmount"),
        allowance_total=_amount(totals, "cbc:AllowanceTotalAmount"),
        charge_total=_amount(totals, "cbc:ChargeTotalAmount"),
        tax_basis=_amount(totals, "cbc:TaxExclusiveAmount"),
        tax=_tax_total(root, currency),
        grand_total=_amount(totals, "cbc:TaxInclusiveAmount"),
        prepaid=_amount(totals, "cbc:PrepaidAmount"),
        rounding=_amount(totals, "cbc:PayableRoundingAmount"),
        due_payable=_amount(totals, "cbc:PayableAmount"),
        lines=[_line(item, quantity_tag) for item in root.findall(f"cac:{line_tag}", _NS)],
    )


def _text(under: Element | None, path: str) -> str | None:
    if under is None:
        return None
    found = under.find(path, _NS)
    return None if found is None else found.text


def _amount(under: Element | None, path: str) -> Decimal | None:
    return parse_decimal(_text(under, path))


def _due_date(root: Element) -> date | None:
    # An Invoice has cbc:DueDate; a CreditNote states it per payment means.
    return parse_date(_text(root, "cbc:DueDate")) or parse_date(
        _text(root, "cac:PaymentMeans/cbc:PaymentDueDate")
    )


def _tax_total(root: Element, currency: str | None) -> Decimal | None:
    """BT-110: the TaxTotal in the document currency (a second one may be in the VAT
    accounting currency, BT-111)."""
    amounts = [
        found
        for total in root.findall("cac:TaxTotal", _NS)
        if (found := total.find("cbc:TaxAmount", _NS)) is not None
    ]
    chosen = [a for a in amounts if currency is None or a.get("currencyID") in (None, currency)]
    pick = (chosen or amounts)[:1]
    return parse_decimal(pick[0].text) if pick else None


def _party_name(party: Element | None) -> str | None:
    # The legal registration name (BT-27) is the seller's name; the trading name (BT-28) is
    # what some invoices print instead, and the only one some senders fill in.
    return clean(_text(party, "cac:PartyLegalEntity/cbc:RegistrationName")) or clean(
        _text(party, "cac:PartyName/cbc:Name")
    )


def _address(party: Element | None) -> str | None:
    address = None if party is None else party.find("cac:PostalAddress", _NS)
    if address is None:
        return None
    street = [
        clean(_text(address, "cbc:StreetName")),
        clean(_text(address, "cbc:AdditionalStreetName")),
        *(clean(line.text) for line in address.findall("cac:AddressLine/cbc:Line", _NS)),
    ]
    town = " ".join(
        part
        for part in (clean(_text(address, "cbc:PostalZone")), clean(_text(address, "cbc:CityName")))
        if part
    )
    parts = [p for p in [*street, town] if p]
    return ", ".join(parts) or None


def _line(item: Element, quantity_tag: str) -> EInvoiceLine:
    allowances, charges = Decimal(0), Decimal(0)
    for charge in item.findall("cac:AllowanceCharge", _NS):
        amount = _amount(charge, "cbc:Amount") or Decimal(0)
        if (_text(charge, "cbc:ChargeIndicator") or "").strip().lower() == "true":
            charges += amount
        else:
            allowances += amount
    price = item.find("cac:Price", _NS)
    return EInvoiceLine(
        description=clean(_text(item, "cac:Item/cbc:Name"))
        or clean(_text(item, "cac:Item/cbc:Description")),
        quantity=_amount(item, f"cbc:{quantity_tag}"),
        unit_price=_amount(price, "cbc:PriceAmount"),
        amount=_amount(item, "cbc:LineExtensionAmount"),
        basis_quantity=_amount(price, "cbc:BaseQuantity"),
        allowances=allowances,
        charges=charges,
    )


def _describe(customization: str | None, kind: str) -> tuple[str, str]:
    folded = (customization or "").lower()
    if "xrechnung" in folded:
        family, profile = "XRechnung", "xrechnung"
    elif "peppol" in folded:
        family, profile = "Peppol BIS Billing 3.0", "peppol-bis-3"
    elif "en16931" in folded:
        family, profile = "EN 16931", "en16931"
    else:
        family, profile = "UBL 2.1", "unknown"
    what = "credit note" if kind == "CreditNote" else "invoice"
    return f"{family} (UBL {what})", profile
