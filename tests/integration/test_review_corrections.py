"""Review verdicts on real Postgres: corrections beside the originals, the document moving on
as a recorded state change, and refusals that leave everything as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import ObjectRef
from pipeline.usecases import review

pytestmark = pytest.mark.integration

DATA = {
    "invoice_number": "INV-7",
    "invoice_date": "2026-03-01",
    "currency": "EUR",
    "subtotal": "100.00",
    "tax": "19.00",
    "total": "119.00",
    "line_items": [
        {"description": "Widget", "quantity": "2", "unit_price": "50.00", "amount": "100.00"},
        {"description": "Gadget", "quantity": "1", "unit_price": "5.00", "amount": "9.00"},
    ],
}


def in_review(
    sessions: sessionmaker[Session], data: dict[str, Any], grounding: dict[str, Any]
) -> int:
    with transaction(sessions) as session:
        document_id, _ = repo.register_document(
            session, ObjectRef("b", "in/r.pdf", "v"), "invoice", "local"
        )
        session.execute(
            text(
                "INSERT INTO extractions (document_id, schema_name, schema_version, provider,"
                " model, valid, data, grounding, review_reasons) VALUES (:id, 'invoice', '1',"
                " 'local', 'm', true, CAST(:data AS jsonb), CAST(:g AS jsonb), '[\"x\"]')"
            ),
            {"id": document_id, "data": json.dumps(data), "g": json.dumps(grounding)},
        )
        session.execute(
            text("UPDATE documents SET status = 'needs_review' WHERE id = :id"), {"id": document_id}
        )
    return document_id


def test_doubtful_fields_come_from_grounding_and_failing_rules() -> None:
    doubtful = review.doubtful_fields("invoice", DATA, {"invoice_number": "ungrounded"})
    assert doubtful["invoice_number"] == ["not found on any page"]
    # Line 2 is 1 x 5.00 but says 9.00; the lines also no longer add up to the subtotal.
    assert any("line 2" in why for why in doubtful["line_items[1].amount"])
    assert "line_items[0].amount" in doubtful  # the sum rule names every line
    assert "total" not in doubtful


def test_a_review_stores_corrections_beside_the_originals_and_moves_the_document_on(
    sessions: sessionmaker[Session],
) -> None:
    doc = in_review(sessions, DATA, {"invoice_number": "ungrounded"})
    answers = {"invoice_number": "INV-7", "line_items[1].amount": " 5.00 ", "tax": "19.00"}
    with transaction(sessions) as session:
        outcome = review.apply_review(session, doc, "  Ada   Lovelace ", answers)
    assert outcome.corrected == ["line_items[1].amount"]
    assert "invoice_number" in outcome.accepted

    with sessions() as session:
        rows = {
            r.field: r
            for r in session.execute(
                text("SELECT * FROM review_corrections WHERE document_id = :id"), {"id": doc}
            )
        }
        data = session.execute(
            text("SELECT data FROM extractions WHERE document_id = :id"), {"id": doc}
        ).scalar_one()
        status = session.execute(
            text("SELECT status FROM documents WHERE id = :id"), {"id": doc}
        ).scalar_one()
        last_event = session.execute(
            text(
                "SELECT from_status, to_status, worker FROM document_events"
                " WHERE document_id = :id ORDER BY id DESC LIMIT 1"
            ),
            {"id": doc},
        ).one()
    corrected = rows["line_items[1].amount"]
    assert (corrected.action, corrected.original, corrected.corrected) == (
        "corrected",
        "9.00",
        "5.00",
    )
    assert corrected.reviewer == "Ada Lovelace" and corrected.created_at is not None
    assert rows["invoice_number"].action == "accepted"
    assert rows["invoice_number"].reason == "not found on any page"
    assert "tax" not in rows  # neither doubtful nor changed: no verdict recorded
    assert data["line_items"][1]["amount"] == "5.00"
    assert data["invoice_number"] == "INV-7"
    assert status == "done"
    assert tuple(last_event) == ("needs_review", "done", "review:Ada Lovelace")


def test_an_invalid_correction_is_refused_and_nothing_changes(
    sessions: sessionmaker[Session],
) -> None:
    doc = in_review(sessions, DATA, {})
    with pytest.raises(review.ReviewInvalid) as caught, transaction(sessions) as session:
        review.apply_review(session, doc, "Ada", {"invoice_date": "the first of March"})
    assert any("invoice_date" in e for e in caught.value.errors)
    with sessions() as session:
        assert session.execute(text("SELECT count(*) FROM review_corrections")).scalar() == 0
        assert (
            session.execute(
                text("SELECT status FROM documents WHERE id = :id"), {"id": doc}
            ).scalar_one()
            == "needs_review"
        )


def test_a_review_needs_a_reviewer_and_a_document_waiting_for_one(
    sessions: sessionmaker[Session],
) -> None:
    doc = in_review(sessions, DATA, {})
    with pytest.raises(review.ReviewError), transaction(sessions) as session:
        review.apply_review(session, doc, "   ", {})
    with transaction(sessions) as session:
        review.apply_review(session, doc, "Ada", {})
    with pytest.raises(review.ReviewConflict), transaction(sessions) as session:
        review.apply_review(session, doc, "Bob", {"total": "1.00"})  # done already
    with pytest.raises(review.ReviewConflict), transaction(sessions) as session:
        review.apply_review(session, doc + 1000, "Bob", {})


def test_a_reviewed_document_is_a_ground_truth_case(sessions: sessionmaker[Session]) -> None:
    doc = in_review(sessions, DATA, {})
    with transaction(sessions) as session:
        review.apply_review(session, doc, "Ada", {"line_items[1].amount": "5.00"})
    with sessions() as session:
        (case,) = review.reviewed_cases(session)
    gt = case.ground_truth()
    assert gt["doc"] == f"pagemill-{doc:07d}.pdf"
    assert gt["fields"] == {
        "invoice_number": "INV-7",
        "date": "2026-03-01",
        "total": "119.00",
        "currency": "EUR",
        "vendor_name": None,
        "tax": "19.00",
    }
    assert gt["line_items"][1] == {
        "description": "Gadget",
        "quantity": "1",
        "unit_price": "5.00",
        "amount": "5.00",
    }
    assert gt["source"] == "s3://b/in/r.pdf"
    assert "Ada" in gt["notes"][0] and "line_items[1].amount" in gt["notes"][0]
