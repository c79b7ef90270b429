"""E-invoices made for tests: CII XML with drafthorse, Factur-X PDFs with factur-x, UBL XML,
and hostile XML files (entity expansion, external entities)."""

from __future__ import annotations

import dataclasses
import io
from decimal import Decimal
from xml.etree import ElementTree as ET

import pymupdf
from drafthorse.models.accounting import ApplicableTradeTax
from drafthorse.models.document import Document
from drafthorse.models.tradelines import LineItem
from facturx import generate_from_binary

from pipeline.synthetic import SyntheticInvoice, render_pdf

EN16931 = "urn:cen.eu:en16931:2017"
XRECHNUNG_CII = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
PEPPOL_BIS = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
_D = Decimal


def cii_xml(
    invoice: SyntheticInvoice,
    guideline: str = EN16931,
    *,
    price_basis: Decimal | None = None,
    schema: str = "FACTUR-X_EN16931",
) -> bytes:
    """CII D16B XML for `invoice`, built and checked against the Factur-X XSD by drafthorse.
    `price_basis` states every net price per that many units (a price per 100 pieces)."""
    doc = Document()
    doc.context.guideline_parameter.id = guideline
    doc.header.id = invoice.invoice_number
    doc.header.type_code = "380"
    doc.header.issue_date_time = invoice.invoice_date
    seller = doc.trade.agreement.seller
    seller.name = invoice.vendor_name
    street, _, town = invoice.vendor_address.partition(", ")
    postcode, _, city = town.partition(" ")
    seller.address.line_one = street
    seller.address.postcode = postcode
    seller.address.city_name = city.split(",")[0]
    seller.address.country_id = "DE"
    doc.trade.agreement.buyer.name = invoice.customer_name
    doc.trade.settlement.currency_code = invoice.currency
    doc.trade.settlement.payment_means.type_code = "58"
    for n, item in enumerate(invoice.line_items, start=1):
        line = LineItem()
        line.document.line_id = str(n)
        line.product.name = str(item["description"])
        price = _D(str(item["unit_price"]))
        basis = price_basis or _D(1)
        line.agreement.net.amount = price * basis if price_basis else price
        line.agreement.net.basis_quantity = (basis, "C62")
        line.delivery.billed_quantity = (_D(str(item["quantity"])), "C62")
        line.settlement.trade_tax.type_code = "VAT"
        line.settlement.trade_tax.category_code = "S"
        line.settlement.trade_tax.rate_applicable_percent = invoice.tax_rate
        line.settlement.monetary_summation.total_amount = _D(str(item["amount"]))
        doc.trade.items.add(line)
    tax = ApplicableTradeTax()
    tax.calculated_amount = invoice.tax
    tax.basis_amount = invoice.subtotal
    tax.type_code = "VAT"
    tax.category_code = "S"
    tax.rate_applicable_percent = invoice.tax_rate
    doc.trade.settlement.trade_tax.add(tax)
    doc.trade.settlement.terms.add(_due(invoice))
    totals = doc.trade.settlement.monetary_summation
    totals.line_total = invoice.subtotal
    totals.charge_total = _D("0.00")
    totals.allowance_total = _D("0.00")
    totals.tax_basis_total = invoice.subtotal
    totals.tax_total = (invoice.tax, invoice.currency)
    totals.grand_total = invoice.total
    totals.due_amount = invoice.total
    xml: bytes = doc.serialize(schema=schema)
    return xml


def _due(invoice: SyntheticInvoice) -> object:
    from drafthorse.models.payment import PaymentTerms

    terms = PaymentTerms()
    terms.due = invoice.due_date
    return terms


def facturx_pdf(
    invoice: SyntheticInvoice,
    *,
    printed: SyntheticInvoice | None = None,
    xml: bytes | None = None,
    attachment_name: str | None = None,
) -> bytes:
    """A Factur-X PDF: the page shows `printed` (default: `invoice`) and the embedded XML says
    `invoice` (or is `xml` as given). The factur-x library embeds it as the standard requires
    (file name, /AF relationship, XMP metadata); `attachment_name` embeds raw bytes under
    another name with PyMuPDF instead, for XML the library would refuse."""
    page = render_pdf(printed or invoice)
    body = xml if xml is not None else cii_xml(invoice)
    if attachment_name is not None:
        doc = pymupdf.open(stream=page, filetype="pdf")
        doc.embfile_add(attachment_name, body, filename=attachment_name)
        data: bytes = doc.tobytes()
        doc.close()
        return data
    out: bytes = generate_from_binary(page, body, flavor="factur-x", check_xsd=True)
    return out


def changed(invoice: SyntheticInvoice, **fields: object) -> SyntheticInvoice:
    copy = dataclasses.replace(invoice, line_items=[dict(i) for i in invoice.line_items])
    for name, value in fields.items():
        setattr(copy, name, value)
    return copy


UBL_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
UBL_CREDIT_NOTE = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"


def ubl_xml(invoice: SyntheticInvoice, *, credit_note: bool = False) -> bytes:
    """A Peppol BIS Billing 3.0 UBL invoice (or credit note) for `invoice`, in the element
    order of the UBL 2.1 schema (no maintained Python library writes UBL; the structure is
    that of the Peppol BIS examples)."""
    kind = "CreditNote" if credit_note else "Invoice"
    ET.register_namespace("", UBL_CREDIT_NOTE if credit_note else UBL_INVOICE)
    ET.register_namespace("cac", CAC)
    ET.register_namespace("cbc", CBC)
    root = ET.Element(f"{{{UBL_CREDIT_NOTE if credit_note else UBL_INVOICE}}}{kind}")
    cur = invoice.currency

    def cbc(parent: ET.Element, name: str, text: str, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{CBC}}}{name}", attrs)
        element.text = text
        return element

    def cac(parent: ET.Element, name: str) -> ET.Element:
        return ET.SubElement(parent, f"{{{CAC}}}{name}")

    cbc(root, "CustomizationID", PEPPOL_BIS)
    cbc(root, "ProfileID", "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0")
    cbc(root, "ID", invoice.invoice_number)
    cbc(root, "IssueDate", invoice.invoice_date.isoformat())
    if not credit_note:
        cbc(root, "DueDate", invoice.due_date.isoformat())
    cbc(root, f"{kind}TypeCode", "381" if credit_note else "380")
    cbc(root, "DocumentCurrencyCode", cur)
    street, _, town = invoice.vendor_address.partition(", ")
    postcode, _, city = town.partition(" ")
    for role, name in (
        ("AccountingSupplierParty", invoice.vendor_name),
        ("AccountingCustomerParty", invoice.customer_name),
    ):
        party = cac(cac(root, role), "Party")
        cbc(cac(party, "PartyName"), "Name", name)
        address = cac(party, "PostalAddress")
        cbc(address, "StreetName", street)
        cbc(address, "CityName", city.split(",")[0])
        cbc(address, "PostalZone", postcode)
        cbc(cac(address, "Country"), "IdentificationCode", "DE")
        cbc(cac(party, "PartyLegalEntity"), "RegistrationName", name)
    if credit_note:
        cbc(cac(root, "PaymentMeans"), "PaymentDueDate", invoice.due_date.isoformat())
    # A second TaxTotal in another currency (BT-111) must not be taken for the invoice's.
    cbc(cac(root, "TaxTotal"), "TaxAmount", "999.99", currencyID="SEK")
    cbc(cac(root, "TaxTotal"), "TaxAmount", f"{invoice.tax:.2f}", currencyID=cur)
    totals = cac(root, "LegalMonetaryTotal")
    for name, value in (
        ("LineExtensionAmount", invoice.subtotal),
        ("TaxExclusiveAmount", invoice.subtotal),
        ("TaxInclusiveAmount", invoice.total),
        ("PayableAmount", invoice.total),
    ):
        cbc(totals, name, f"{value:.2f}", currencyID=cur)
    for n, item in enumerate(invoice.line_items, start=1):
        line = cac(root, f"{kind}Line")
        cbc(line, "ID", str(n))
        quantity = "CreditedQuantity" if credit_note else "InvoicedQuantity"
        cbc(line, quantity, str(item["quantity"]), unitCode="C62")
        cbc(line, "LineExtensionAmount", str(item["amount"]), currencyID=cur)
        cbc(cac(line, "Item"), "Name", str(item["description"]))
        cbc(cac(line, "Price"), "PriceAmount", str(item["unit_price"]), currencyID=cur)
    buf = io.BytesIO()
    ET.ElementTree(root).write(buf, encoding="utf-8", xml_declaration=True)
    return buf.getvalue()


# Hostile XML. A parser that expands entities turns BILLION_LAUGHS into ~3 GB of text; one that
# resolves external entities puts a local file into the invoice number (XXE).
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE rsm:CrossIndustryInvoice [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rsm:CrossIndustryInvoice
  xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
  xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100">
 <rsm:ExchangedDocument><ram:ID>&lol9;</ram:ID></rsm:ExchangedDocument>
</rsm:CrossIndustryInvoice>
"""


def external_entity(path: str) -> bytes:
    """CII XML whose invoice number is an external entity naming a local file."""
    return f"""<?xml version="1.0"?>
<!DOCTYPE rsm:CrossIndustryInvoice [<!ENTITY secret SYSTEM "file://{path}">]>
<rsm:CrossIndustryInvoice
  xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
  xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100">
 <rsm:ExchangedDocument><ram:ID>&secret;</ram:ID></rsm:ExchangedDocument>
</rsm:CrossIndustryInvoice>
""".encode()
