"""E-invoices read exactly: real Factur-X / ZUGFeRD PDFs, generated CII and UBL, hostile XML."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from pipeline.einvoice import einvoice_in_pdf, read_einvoice
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.evaluation import score_fields
from pipeline.pages import XML, Limits, opened, sniff
from pipeline.schemas import get_schema
from pipeline.synthetic import make_invoice
from pipeline.validation import validate
from tests.support.einvoices import (
    BILLION_LAUGHS,
    XRECHNUNG_CII,
    cii_xml,
    external_entity,
    facturx_pdf,
    ubl_xml,
)

EINVOICES = Path(__file__).resolve().parents[2].parent / "shared" / "einvoices"
REAL = sorted((EINVOICES / "docs").glob("*.pdf")) if EINVOICES.is_dir() else []


def _gt(pdf: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EINVOICES / "gt" / f"{pdf.stem}.json").read_text("utf-8"))
    return data


def _same_lines(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    if len(got) != len(want):
        return False
    for mine, theirs in zip(got, want, strict=True):
        if mine["description"] != theirs["description"]:
            return False
        for name in ("quantity", "unit_price", "amount"):
            expected = theirs.get(name)
            if expected is not None and Decimal(str(mine[name])) != Decimal(expected):
                return False
    return True


@pytest.mark.skipif(not REAL, reason="shared/einvoices is not present")
@pytest.mark.parametrize("pdf", REAL, ids=[p.stem for p in REAL])
def test_real_einvoices_are_read_exactly(pdf: Path) -> None:
    with pymupdf.open(pdf) as doc:
        invoice = einvoice_in_pdf(doc)
    assert invoice is not None
    gt = _gt(pdf)
    data = invoice.as_schema()
    assert validate(get_schema("invoice"), data).ok
    scores = score_fields(data, gt["fields"])
    assert all(ok is not False for ok in scores.values()), (scores, data)
    assert _same_lines(data["line_items"], gt.get("line_items") or []), data["line_items"]


def test_profiles_and_generations_are_named() -> None:
    if not REAL:
        pytest.skip("shared/einvoices is not present")
    models = set()
    for pdf in REAL:
        with pymupdf.open(pdf) as doc:
            invoice = einvoice_in_pdf(doc)
        assert invoice is not None
        models.add(invoice.model)
    # MINIMUM to EXTENDED, and ZUGFeRD 1.0 (whose PDFlib files hide the XML under /Kids).
    assert {"cii-d16b:minimum", "cii-d16b:extended", "zugferd-1:basic"} <= models


def test_generated_cii_xml_is_read_exactly() -> None:
    invoice = make_invoice(21)
    read = read_einvoice(cii_xml(invoice))
    assert read.syntax == "CII" and read.model == "cii-d16b:en16931"
    data = read.as_schema()
    assert {k: v for k, v in data.items() if k != "vendor_address"} == invoice.expected()
    assert data["vendor_address"] == invoice.vendor_address.rsplit(", ", 1)[0]


def test_xrechnung_cii_is_named_for_what_it_is() -> None:
    read = read_einvoice(cii_xml(make_invoice(22), guideline=XRECHNUNG_CII))
    assert read.standard == "XRechnung (CII)" and read.model == "cii-d16b:xrechnung"


def test_generated_facturx_pdf_carries_its_invoice() -> None:
    invoice = make_invoice(23)
    with pymupdf.open(stream=facturx_pdf(invoice), filetype="pdf") as doc:
        read = einvoice_in_pdf(doc)
    assert read is not None
    assert read.as_schema()["total"] == invoice.expected()["total"]
    assert read.as_schema()["line_items"] == invoice.expected()["line_items"]


@pytest.mark.parametrize("credit_note", [False, True])
def test_ubl_invoice_and_credit_note_are_read_exactly(credit_note: bool) -> None:
    invoice = make_invoice(24)
    read = read_einvoice(ubl_xml(invoice, credit_note=credit_note))
    assert read.syntax == "UBL" and read.model == "ubl-2.1:peppol-bis-3"
    data = read.as_schema()
    # The second TaxTotal (999.99 SEK, the VAT accounting currency) is not the invoice's tax.
    assert {k: v for k, v in data.items() if k != "vendor_address"} == invoice.expected()
    assert read.type_code == ("381" if credit_note else "380")


def test_an_xml_file_is_sniffed_and_has_no_pages() -> None:
    data = ubl_xml(make_invoice(25))
    assert sniff(data) == XML
    assert sniff(b"\xef\xbb\xbf  <Invoice/>") == XML
    with opened(data, Limits()) as doc:
        assert doc.page_count == 0 and list(doc.pages()) == []


def test_html_is_still_not_xml() -> None:
    with pytest.raises(PermanentError) as info:
        sniff(b"<html><body>an invoice</body></html>")
    assert info.value.category is ErrorCategory.UNSUPPORTED_TYPE


def test_billion_laughs_is_refused_before_any_expansion() -> None:
    with pytest.raises(PermanentError) as info:
        read_einvoice(BILLION_LAUGHS, "the XML file")
    assert info.value.category is ErrorCategory.BAD_INPUT
    assert "DTD" in info.value.message and "refused" in info.value.message


def test_external_entity_is_refused_and_nothing_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    with pytest.raises(PermanentError) as info:
        read_einvoice(external_entity(str(secret)), "the XML file")
    assert info.value.category is ErrorCategory.BAD_INPUT
    assert "TOP-SECRET" not in info.value.message


def test_an_external_dtd_is_refused() -> None:
    xml = b'<?xml version="1.0"?><!DOCTYPE Invoice SYSTEM "http://127.0.0.1:9/x.dtd"><Invoice/>'
    with pytest.raises(PermanentError) as info:
        read_einvoice(xml)
    assert info.value.category is ErrorCategory.BAD_INPUT


def test_hostile_xml_embedded_in_a_pdf_refuses_the_document() -> None:
    pdf = facturx_pdf(make_invoice(26), xml=BILLION_LAUGHS, attachment_name="factur-x.xml")
    with pymupdf.open(stream=pdf, filetype="pdf") as doc, pytest.raises(PermanentError) as info:
        einvoice_in_pdf(doc)
    assert info.value.category is ErrorCategory.BAD_INPUT
    assert "factur-x.xml" in info.value.message


def test_malformed_xml_is_bad_input_and_other_xml_is_not_an_invoice() -> None:
    with pytest.raises(PermanentError) as broken:
        read_einvoice(b"<Invoice><ID>1</Invoice>")
    assert broken.value.category is ErrorCategory.BAD_INPUT
    with pytest.raises(PermanentError) as other:
        read_einvoice(b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert other.value.category is ErrorCategory.UNSUPPORTED_TYPE
    assert "<svg>" in other.value.message


def test_a_broken_attachment_is_passed_over_for_the_page() -> None:
    pdf = facturx_pdf(make_invoice(30), xml=b"<rsm:Cross", attachment_name="factur-x.xml")
    with pymupdf.open(stream=pdf, filetype="pdf") as doc:
        assert einvoice_in_pdf(doc) is None


def test_a_placeholder_attachment_is_passed_over() -> None:
    # What the development set's PDFs carry: the XML overwritten by a placeholder.
    placeholder = b'<removed reason="embedded e-invoice XML removed for extraction evaluation"/>'
    pdf = facturx_pdf(make_invoice(27), xml=placeholder, attachment_name="factur-x.xml")
    with pymupdf.open(stream=pdf, filetype="pdf") as doc:
        assert einvoice_in_pdf(doc) is None


def test_a_compression_bomb_attachment_is_not_inflated() -> None:
    bomb = b"<a>" + b" " * (64 * 1024 * 1024) + b"</a>"  # 64 MB, deflates to ~64 kB
    pdf = facturx_pdf(make_invoice(28), xml=bomb, attachment_name="factur-x.xml")
    assert len(pdf) < 1024 * 1024
    with pymupdf.open(stream=pdf, filetype="pdf") as doc:
        assert einvoice_in_pdf(doc) is None


def test_prices_per_basis_quantity_keep_the_printed_price() -> None:
    invoice = make_invoice(29)
    read = read_einvoice(cii_xml(invoice, price_basis=Decimal(100)))
    first = read.lines[0]
    assert first.basis_quantity == 100
    assert first.unit_price == Decimal(str(invoice.line_items[0]["unit_price"])) * 100
