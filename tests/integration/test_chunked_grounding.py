"""A document longer than one model call: grounding reads the words chunk by chunk."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from pipeline.db import repository as repo
from pipeline.db.models import Extraction
from pipeline.domain import DocumentStatus
from pipeline.grounding import ground
from pipeline.schemas.invoice import INVOICE
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases.process import Collaborators
from tests.support.fake_model_server import FakeModelServer, reply
from tests.support.pipeline_helpers import process_document, upload
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration


def _stored_grounding(deps: Collaborators, doc_id: int) -> tuple[dict[str, Any], list[str]]:
    with deps.sessions() as session:
        extraction = session.execute(
            select(Extraction).where(Extraction.document_id == doc_id)
        ).scalar_one()
    assert extraction.grounding is not None
    return extraction.grounding, list(extraction.review_reasons or [])


@pytest.mark.parametrize("wrong_total", [False, True])
def test_multi_chunk_document_is_grounded_chunk_by_chunk(
    deps: Collaborators,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
    wrong_total: bool,
) -> None:
    invoice = make_invoice(31, items=70)
    pdf = render_pdf(invoice, rows_per_page=20)  # four pages
    deps = Collaborators(
        sessions=deps.sessions,
        s3=deps.s3,
        extractor_for=deps.extractor_for,
        prices=deps.prices,
        settings=deps.settings.model_copy(update={"pages_per_call": 1}),
    )
    expected = invoice.expected()
    answers = [{**expected, "line_items": []} for _ in range(3)]
    if wrong_total:
        # The rule check fails on the total, the re-check confirms it: grounding runs twice.
        answers = [{**a, "total": "1.00"} for a in answers]
    fake_model_server.fields = expected | ({"total": "1.00"} if wrong_total else {})
    fake_model_server.script(*(reply(fields=a) for a in answers))
    ranges: list[tuple[int, int]] = []
    load_pages = repo.load_pages

    def spy(session: Any, document_id: int, start: int, stop: int, **kw: Any) -> Any:
        ranges.append((start, stop))
        return load_pages(session, document_id, start, stop, **kw)

    monkeypatch.setattr(repo, "load_pages", spy)
    doc_id = upload(deps, bucket_with_queue.bucket, "long.pdf", pdf, "anthropic")

    status = process_document(deps, doc_id)

    # Never more than one chunk of pages read at a time, and never all four.
    assert ranges and all(stop - start <= 1 for start, stop in ranges)
    chunks = list(repo.iter_page_words(deps.sessions, doc_id, 0, 4, 1))
    assert [[p.index for p in c] for c in chunks] == [[0], [1], [2], [3]]
    with deps.sessions() as session:
        whole = repo.load_pages(session, doc_id, 0, 4)
    assert [p.words for c in chunks for p in c] == [p.words for p in whole]
    grounding, reasons = _stored_grounding(deps, doc_id)
    with deps.sessions() as session:
        data = session.execute(
            select(Extraction.data).where(Extraction.document_id == doc_id)
        ).scalar_one()
    assert data is not None
    assert grounding == ground(data, whole, vocabulary=INVOICE.vocabulary).to_json()
    if wrong_total:
        assert status is DocumentStatus.NEEDS_REVIEW
        assert fake_model_server.request_count > 4  # the re-check asked again
        assert grounding["total"] == "ungrounded"
        assert any("total" in r for r in reasons)
    else:
        assert status is DocumentStatus.DONE, reasons
        assert all(v != "ungrounded" for v in grounding.values())
        assert grounding["total"]["page"] == 3
