"""The e-invoice path end to end in-process: XML first whatever the provider, cost 0, no model
call, cross-checked against the printed page."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from pipeline.checks import run_rules
from pipeline.costing import load_price_table
from pipeline.domain import ExtractionResult
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.extractors import build_extractor
from pipeline.schemas import get_schema
from pipeline.settings import load_settings
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases.extract import Meter
from pipeline.usecases.extract_file import extract_bytes
from tests.support.einvoices import BILLION_LAUGHS, changed, cii_xml, facturx_pdf, ubl_xml
from tests.support.fake_model_server import FakeModelServer


def _extract(
    data: bytes, provider: str = "local", **settings: Any
) -> tuple[ExtractionResult, Meter]:
    config = load_settings(provider=provider, **settings)
    return extract_bytes(
        data, build_extractor(config), get_schema("invoice"), load_price_table(), config
    )


def test_a_facturx_pdf_is_read_from_its_xml_with_no_model_call(
    fake_model_server: FakeModelServer,
) -> None:
    invoice = make_invoice(31)
    result, meter = _extract(
        facturx_pdf(invoice),
        "openai_compat",
        openai_base_url=fake_model_server.openai_base_url,
    )
    assert fake_model_server.request_count == 0  # the configured model was never asked
    assert result.provider == "einvoice" and result.model == "cii-d16b:en16931"
    assert result.data is not None
    assert {k: v for k, v in result.data.items() if k != "vendor_address"} == invoice.expected()
    [call] = meter.calls
    assert call.provider == "einvoice" and call.cost_usd == 0 and call.outcome.value == "ok"
    assert result.review_reasons == []
    assert result.grounding and "total" in result.grounding


def test_xml_and_page_disagreeing_go_to_review_with_both_values() -> None:
    invoice = make_invoice(32)
    printed = changed(invoice, invoice_number="INV-2026-99999")
    printed.line_items[0]["amount"] = Decimal(str(printed.line_items[0]["amount"])) + 10
    result, _ = _extract(facturx_pdf(invoice, printed=printed))
    reasons = "\n".join(result.review_reasons)
    assert result.needs_review
    assert f"the XML says {invoice.invoice_number}" in reasons
    assert "INV-2026-99999" in reasons  # what the page shows instead
    assert f"line 1 amount: the XML says {invoice.line_items[0]['amount']}" in reasons
    # The XML's values are the result; the reasons tell the reviewer what the page says.
    assert result.data is not None and result.data["invoice_number"] == invoice.invoice_number


def test_an_xml_file_is_a_document_without_pages() -> None:
    invoice = make_invoice(33)
    result, meter = _extract(ubl_xml(invoice))
    assert result.provider == "einvoice" and result.model == "ubl-2.1:peppol-bis-3"
    assert result.data is not None and result.data["total"] == invoice.expected()["total"]
    assert result.review_reasons == [] and result.grounding == {}
    assert [c.cost_usd for c in meter.calls] == [0]


def test_a_cii_xml_file_is_read_too() -> None:
    invoice = make_invoice(34)
    result, _ = _extract(cii_xml(invoice))
    assert result.data is not None
    assert result.data["line_items"] == invoice.expected()["line_items"]


def test_prices_per_100_units_are_not_taken_for_an_arithmetic_error() -> None:
    # quantity x price != amount when the price is per 100 pieces: the XML says so.
    invoice = make_invoice(35)
    result, _ = _extract(facturx_pdf(invoice, xml=cii_xml(invoice, price_basis=Decimal(100))))
    assert result.provider == "einvoice" and result.data is not None
    # The schema's rule does fail on these values; the XML's basis quantity explains it.
    failed = {f.rule for f in run_rules(get_schema("invoice").rules, result.data)}
    assert "line_quantity_times_price" in failed
    assert not [r for r in result.review_reasons if "line_quantity_times_price" in r]


def test_a_hostile_xml_file_fails_as_bad_input() -> None:
    with pytest.raises(PermanentError) as info:
        _extract(BILLION_LAUGHS)
    assert info.value.category is ErrorCategory.BAD_INPUT
    assert "DTD" in info.value.message


def test_the_einvoice_provider_refuses_a_document_without_xml() -> None:
    with pytest.raises(PermanentError) as info:
        _extract(render_pdf(make_invoice(36)), "einvoice")
    assert info.value.category is ErrorCategory.BAD_INPUT
    assert "no e-invoice XML" in info.value.message


def test_other_schemas_keep_their_extractor() -> None:
    config = load_settings(provider="local")
    with pytest.raises(PermanentError) as info:
        extract_bytes(
            ubl_xml(make_invoice(37)),
            build_extractor(config),
            get_schema("receipt"),
            load_price_table(),
            config,
        )
    assert info.value.category is ErrorCategory.UNSUPPORTED_TYPE
    assert "'invoice' schema" in info.value.message
