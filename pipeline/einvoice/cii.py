"""UN/CEFACT Cross Industry Invoice: ZUGFeRD 2.x / Factur-X / XRechnung (D16B) and ZUGFeRD 1.0.

Both generations have the same shape under different element names, so one reader walks
either with a table of paths (`_D16B`, `_ZUGFERD1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from xml.etree.ElementTree import Element

from pipeline.einvoice.model import EInvoice, EInvoiceLine, clean, parse_date, parse_decimal

RAM_D16B = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT_D16B = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
RSM_D16B = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM_ZF1 = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:12"
UDT_ZF1 = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:15"
RSM_ZF1 = "urn:ferd:CrossIndustryDocument:invoice:1p0"


@dataclass(frozen=True, slots=True)
class _Paths:
    """Where each value sits in one CII generation (ElementTree paths, prefixes below)."""

    name: str
    ns: dict[str, str]
    context: str
    document: str
    transaction: str
    agreement: str
    settlement: str
    summation: str
    line_agreement: str
    line_delivery: str
    line_settlement: str
    line_summation: str


_D16B = _Paths(
    name="cii-d16b",
    ns={"rsm": RSM_D16B, "ram": RAM_D16B, "udt": UDT_D16B},
    context="rsm:ExchangedDocumentContext",
    document="rsm:ExchangedDocument",
    transaction="rsm:SupplyChainTradeTransaction",
    agreement="ram:ApplicableHeaderTradeAgreement",
    settlement="ram:ApplicableHeaderTradeSettlement",
    summation="ram:SpecifiedTradeSettlementHeaderMonetarySummation",
    line_agreement="ram:SpecifiedLineTradeAgreement",
    line_delivery="ram:SpecifiedLineTradeDelivery",
    line_settlement="ram:SpecifiedLineTradeSettlement",
    line_summation="ram:SpecifiedTradeSettlementLineMonetarySummation",
)
_ZUGFERD1 = _Paths(
    name="zugferd-1",
    ns={"rsm": RSM_ZF1, "ram": RAM_ZF1, "udt": UDT_ZF1},
    context="rsm:SpecifiedExchangedDocumentContext",
    document="rsm:HeaderExchangedDocument",
    transaction="rsm:SpecifiedSupplyChainTradeTransaction",
    agreement="ram:ApplicableSupplyChainTradeAgreement",
    settlement="ram:ApplicableSupplyChainTradeSettlement",
    summation="ram:SpecifiedTradeSettlementMonetarySummation",
    line_agreement="ram:SpecifiedSupplyChainTradeAgreement",
    line_delivery="ram:SpecifiedSupplyChainTradeDelivery",
    line_settlement="ram:SpecifiedSupplyChainTradeSettlement",
    line_summation="ram:SpecifiedTradeSettlementMonetarySummation",
)

ROOTS = {
    f"{{{RSM_D16B}}}CrossIndustryInvoice": _D16B,
    f"{{{RSM_ZF1}}}CrossIndustryDocument": _ZUGFERD1,
}

# EXTENDED profiles mark lines that are not billed themselves: group headers and subtotals.
_NOT_BILLED = frozenset({"GROUP", "INFORMATION"})


def read_cii(root: Element) -> EInvoice:
    """Map a CII document (either generation) onto the invoice schema's fields."""
    paths = ROOTS[root.tag]
    reader = _Reader(root, paths)
    guideline = clean(
        reader.text(f"{paths.context}/ram:GuidelineSpecifiedDocumentContextParameter/ram:ID", root)
    )
    standard, profile = _describe(paths, guideline)
    document = reader.find(paths.document, root)
    transaction = reader.find(paths.transaction, root)
    agreement = reader.find(paths.agreement, transaction)
    settlement = reader.find(paths.settlement, transaction)
    summation = reader.find(paths.summation, settlement)
    currency = clean(reader.text("ram:InvoiceCurrencyCode", settlement))
    seller = reader.find("ram:SellerTradeParty", agreement)
    return EInvoice(
        syntax="CII",
        standard=standard,
        model=f"{paths.name}:{profile}",
        guideline=guideline,
        type_code=clean(reader.text("ram:TypeCode", document)),
        invoice_number=clean(reader.text("ram:ID", document)),
        invoice_date=reader.date("ram:IssueDateTime/udt:DateTimeString", document),
        due_date=reader.date(
            "ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString", settlement
        ),
        vendor_name=clean(reader.text("ram:Name", seller)),
        vendor_address=_address(reader, reader.find("ram:PostalTradeAddress", seller)),
        customer_name=clean(reader.text("ram:BuyerTradeParty/ram:Name", agreement)),
        currency=currency,
        line_total=reader.amount("ram:LineTotalAmount", summation),
        allowance_total=reader.amount("ram:AllowanceTotalAmount", summation),
        charge_total=reader.amount("ram:ChargeTotalAmount", summation),
        tax_basis=reader.amount("ram:TaxBasisTotalAmount", summation),
        tax=reader.amount("ram:TaxTotalAmount", summation, currency),
        grand_total=reader.amount("ram:GrandTotalAmount", summation),
        prepaid=reader.amount("ram:TotalPrepaidAmount", summation),
        rounding=reader.amount("ram:RoundingAmount", summation),
        due_payable=reader.amount("ram:DuePayableAmount", summation),
        lines=[
            line
            for item in reader.all("ram:IncludedSupplyChainTradeLineItem", transaction)
            if (line := _line(reader, item)) is not None
        ],
    )


class _Reader:
    """Namespace-aware look-ups that answer None below a parent that is missing."""

    def __init__(self, root: Element, paths: _Paths) -> None:
        self.root, self.paths, self.ns = root, paths, paths.ns

    def find(self, path: str, under: Element | None) -> Element | None:
        return None if under is None else under.find(path, self.ns)

    def all(self, path: str, under: Element | None) -> list[Element]:
        return [] if under is None else under.findall(path, self.ns)

    def text(self, path: str, under: Element | None) -> str | None:
        found = self.find(path, under)
        return None if found is None else found.text

    def date(self, path: str, under: Element | None) -> date | None:
        found = self.find(path, under)
        return None if found is None else parse_date(found.text, found.get("format"))

    def amount(
        self, path: str, under: Element | None, currency: str | None = None
    ) -> Decimal | None:
        """The amount at `path`; where it repeats (TaxTotalAmount in the invoice currency and
        in the VAT accounting currency), the one in `currency`."""
        found = self.all(path, under)
        if currency is not None:
            found = [e for e in found if e.get("currencyID") in (None, currency)] or found
        return parse_decimal(found[0].text) if found else None


def _line(reader: _Reader, item: Element) -> EInvoiceLine | None:
    paths = reader.paths
    status = clean(reader.text("ram:AssociatedDocumentLineDocument/ram:LineStatusReasonCode", item))
    if status is not None and status.upper() in _NOT_BILLED:
        return None
    agreement = reader.find(paths.line_agreement, item)
    net_price = reader.find("ram:NetPriceProductTradePrice", agreement)
    settlement = reader.find(paths.line_settlement, item)
    allowances, charges = Decimal(0), Decimal(0)
    for charge in reader.all("ram:SpecifiedTradeAllowanceCharge", settlement):
        amount = parse_decimal(reader.text("ram:ActualAmount", charge)) or Decimal(0)
        indicator = (reader.text("ram:ChargeIndicator/udt:Indicator", charge) or "").strip()
        if indicator.lower() == "true":
            charges += amount
        else:
            allowances += amount
    return EInvoiceLine(
        description=clean(reader.text("ram:SpecifiedTradeProduct/ram:Name", item)),
        quantity=reader.amount(f"{paths.line_delivery}/ram:BilledQuantity", item),
        unit_price=reader.amount("ram:ChargeAmount", net_price),
        amount=reader.amount(
            f"{paths.line_settlement}/{paths.line_summation}/ram:LineTotalAmount", item
        ),
        basis_quantity=reader.amount("ram:BasisQuantity", net_price),
        allowances=allowances,
        charges=charges,
    )


def _address(reader: _Reader, address: Element | None) -> str | None:
    if address is None:
        return None
    street = [
        clean(reader.text(f"ram:{part}", address)) for part in ("LineOne", "LineTwo", "LineThree")
    ]
    town = " ".join(
        part
        for part in (
            clean(reader.text("ram:PostcodeCode", address)),
            clean(reader.text("ram:CityName", address)),
        )
        if part
    )
    parts = [p for p in [*street, town] if p]
    return ", ".join(parts) or None


def _describe(paths: _Paths, guideline: str | None) -> tuple[str, str]:
    """("ZUGFeRD 1.0 BASIC (CII)", "basic") and the like, from the guideline id (BT-24).

    Ids look like `urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended`: the
    last part names the profile, a bare `urn:cen.eu:en16931:2017` is EN 16931 itself."""
    folded = (guideline or "").lower()
    last = folded.rsplit("#", 1)[-1]
    profile = "unknown"
    for needle, short in _PROFILES:
        if needle in last:
            profile = short
            break
    else:
        if "en16931" in folded:
            profile = "en16931"
    if paths is _ZUGFERD1:
        family = "ZUGFeRD 1.0"
    elif "xrechnung" in folded:
        family, profile = "XRechnung", "xrechnung"
    elif "zugferd" in folded:
        family = "ZUGFeRD 2"
    else:
        family = "Factur-X"
    label = _LABELS.get(profile, "") if family != "XRechnung" else ""
    return " ".join(p for p in (family, label, "(CII)") if p), profile


# The profile's word in the guideline id, and its short name. Order matters: "basicwl"
# before "basic".
_PROFILES = (
    ("xrechnung", "xrechnung"),
    ("extended", "extended"),
    ("basicwl", "basic-wl"),
    ("basic", "basic"),
    ("minimum", "minimum"),
    ("comfort", "comfort"),
    ("en16931", "en16931"),
)
_LABELS = {
    "extended": "EXTENDED",
    "basic-wl": "BASIC WL",
    "basic": "BASIC",
    "minimum": "MINIMUM",
    "comfort": "COMFORT",
    "en16931": "EN 16931",
}
