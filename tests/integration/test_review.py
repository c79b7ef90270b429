"""Wrong values caught without trusting the model: rules, a high-resolution re-check, grounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from pipeline.db.models import Document, Extraction
from pipeline.domain import DocumentStatus
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases.process import Collaborators
from tests.support.fake_model_server import FakeModelServer, reply
from tests.support.pipeline_helpers import calls, process_document, upload
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration


def _extraction(deps: Collaborators, document_id: int) -> Extraction:
    with deps.sessions() as session:
        return session.execute(
            select(Extraction).where(Extraction.document_id == document_id)
        ).scalar_one()


def test_an_invented_invoice_number_is_ungrounded_and_sent_to_review(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(41)
    fake_model_server.fields = {**invoice.expected(), "invoice_number": "INV-2026-99999"}
    doc_id = upload(
        deps, bucket_with_queue.bucket, "invented.pdf", render_pdf(invoice), "anthropic"
    )

    assert process_document(deps, doc_id) is DocumentStatus.NEEDS_REVIEW

    extraction = _extraction(deps, doc_id)
    assert extraction.grounding is not None
    assert extraction.grounding["invoice_number"] == "ungrounded"
    assert extraction.grounding["total"]["page"] == 0  # the true values are found on the page
    assert any("invoice_number" in reason for reason in extraction.review_reasons)
    assert fake_model_server.request_count == 1  # rules passed: no re-check was needed

    out = subprocess.run(
        [sys.executable, "-m", "workers", "review", "--format", "json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    listed = {r["document_id"]: r for r in json.loads(out.stdout)}
    assert any("invoice_number" in reason for reason in listed[doc_id]["reasons"])


def test_a_total_that_breaks_the_sums_is_re_read_at_higher_resolution(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(42)
    right = invoice.expected()
    wrong_total = f"{invoice.total + 9:.2f}"
    fake_model_server.fields = right
    fake_model_server.script(reply(fields={**right, "total": wrong_total}))
    doc_id = upload(deps, bucket_with_queue.bucket, "misread.pdf", render_pdf(invoice), "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    first, second = fake_model_server.requests
    assert len(first.images()) == 1
    # The re-check shows the page as tiles at twice the resolution, and says what failed.
    assert len(second.images()) == 4
    assert "total" in second.prompt_text() and wrong_total in second.prompt_text()
    extraction = _extraction(deps, doc_id)
    assert extraction.data is not None and extraction.data["total"] == right["total"]
    assert not extraction.review_reasons
    assert [c.outcome for c in calls(deps, doc_id)] == ["ok", "ok"]  # both calls paid, both rows


def test_a_rule_still_broken_after_the_re_check_needs_review(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(43)
    wrong = {**invoice.expected(), "tax": "1.00"}
    fake_model_server.fields = wrong
    doc_id = upload(
        deps, bucket_with_queue.bucket, "stubborn.pdf", render_pdf(invoice), "anthropic"
    )

    assert process_document(deps, doc_id) is DocumentStatus.NEEDS_REVIEW

    extraction = _extraction(deps, doc_id)
    reasons = " | ".join(extraction.review_reasons)
    assert "subtotal_plus_tax_is_total" in reasons
    assert "ungrounded: tax" in reasons
    assert fake_model_server.request_count == 2  # one re-check, bounded
    with deps.sessions() as session:
        assert session.get(Document, doc_id).status == "needs_review"  # type: ignore[union-attr]
