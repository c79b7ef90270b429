"""Verification: required fields and the extractor's own doubts decide review, for any schema."""

from __future__ import annotations

from pipeline.domain import Word
from pipeline.grounding import PageWords
from pipeline.schemas import get_schema
from pipeline.usecases.verify import WEAK_CONFIDENCE, verify

_PAGE = [
    PageWords(
        0,
        [
            Word("Invoice", 50, 50, 90, 60),
            Word("No.", 95, 50, 110, 60),
            Word("A-17", 115, 50, 140, 60),
            Word("Total", 50, 80, 80, 90),
            Word("119.00", 120, 80, 150, 90),
        ],
    )
]


def test_required_fields_are_declared_by_the_schemas() -> None:
    assert get_schema("invoice").required == (
        "invoice_number",
        "invoice_date",
        "total",
        "vendor_name",
    )
    assert get_schema("receipt").required == ("merchant_name", "date", "total")


def test_a_missing_required_field_is_a_review_reason() -> None:
    data = {"invoice_number": "A-17", "total": "119.00", "vendor_name": "  ", "line_items": []}
    verdict = verify(get_schema("invoice"), data, _PAGE)
    assert verdict.missing == ["invoice_date", "vendor_name"]
    assert "missing: invoice_date is required and was not found" in verdict.reasons
    assert "missing: vendor_name is required and was not found" in verdict.reasons
    assert not verdict.ungrounded  # what is there was found on the page


def test_a_value_the_extractor_rates_weak_is_a_review_reason() -> None:
    data = {"invoice_number": "A-17", "total": "119.00"}
    verdict = verify(
        get_schema("invoice"),
        data,
        _PAGE,
        confidence={"invoice_number": 1.0, "total": WEAK_CONFIDENCE - 0.1, "tax": 0.1},
    )
    assert verdict.weak == {"total": WEAK_CONFIDENCE - 0.1}  # tax is null: nothing to doubt
    assert any(r.startswith("weak: total was read with confidence 0.40") for r in verdict.reasons)


def test_the_extractors_notes_are_review_reasons() -> None:
    verdict = verify(get_schema("invoice"), {}, _PAGE, notes=["the offline rules failed (X)"])
    assert "extractor: the offline rules failed (X)" in verdict.reasons


def test_a_complete_confident_record_has_no_reasons_of_its_own() -> None:
    data = {
        "invoice_number": "A-17",
        "invoice_date": None,
        "total": "119.00",
        "vendor_name": None,
    }
    schema = get_schema("invoice")
    relaxed = type(schema)(
        name="relaxed", version="1", model=schema.model, instructions="", required=("total",)
    )
    verdict = verify(relaxed, data, _PAGE, confidence={"total": 0.9})
    assert verdict.missing == [] and verdict.weak == {}
    assert verdict.reasons == []
