"""A document longer than one model call: grounding reads the words chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

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


@dataclass
class PageRead:
    """One SELECT over the stored pages (page_payloads) that Postgres answered."""

    columns: str  # the statement's select list
    start: int
    stop: int
    rows: int  # rows the server returned for it


@pytest.fixture
def page_reads(engine: Engine) -> Iterator[list[PageRead]]:
    """Every read of the stored pages through the test engine, as the driver executed it:
    SQLAlchemy's cursor events on the real engine (nothing of pagemill's is replaced)."""
    reads: list[PageRead] = []

    def after(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        sql = " ".join(statement.split())
        if not sql.upper().startswith("SELECT") or " page_payloads" not in sql:
            return
        assert isinstance(params, dict), params
        if "start" not in params:
            return  # a lookup that does not read page content (none is expected)
        columns = sql[len("SELECT ") : sql.upper().index(" FROM ")]
        reads.append(PageRead(columns, params["start"], params["stop"], cursor.rowcount))

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield reads
    finally:
        event.remove(engine, "after_cursor_execute", after)


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
    page_reads: list[PageRead],
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
    doc_id = upload(deps, bucket_with_queue.bucket, "long.pdf", pdf, "anthropic")

    status = process_document(deps, doc_id)
    reads = list(page_reads)  # what processing read, before the checks below read more

    # Every read of stored pages asked Postgres for one chunk (one page) and got one page
    # back: never two pages, let alone all four, in one statement.
    assert reads
    assert all(r.stop - r.start <= 1 and r.rows <= 1 for r in reads), reads
    # Grounding read the words alone (no page images), every page of the document, and
    # once per grounding pass: twice after a re-check.
    words_only = [r for r in reads if "image" not in r.columns]
    assert words_only and all("words" in r.columns for r in words_only), reads
    passes = 2 if wrong_total else 1
    assert sorted(r.start for r in words_only) == sorted([0, 1, 2, 3] * passes), words_only
    assert all(r.rows == 1 for r in words_only)

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
