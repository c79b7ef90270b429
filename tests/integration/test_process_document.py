"""The document use case against real Postgres, the S3 server over HTTP and the fake model API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.costing import load_price_table
from pipeline.db import repository as repo
from pipeline.db.models import DeadLetter, Document, Extraction, VlmCall
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ObjectRef, Stage, Usage
from pipeline.errors import ErrorCategory, TransientError
from pipeline.extractors import build_extractor
from pipeline.settings import Settings
from pipeline.synthetic import corrupt_pdf, make_invoice, render_pdf
from pipeline.usecases.process import Collaborators, extract_document, prepare_document
from tests.support.fake_model_server import FakeModelServer, error, reply
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration


@pytest.fixture
def deps(
    sessions: sessionmaker[Session],
    s3_settings: Settings,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: FakeModelServer,
) -> Collaborators:
    settings = s3_settings.model_copy(
        update={
            "anthropic_api_key": SecretStr("sk-test"),
            "anthropic_base_url": fake_model_server.anthropic_base_url,
            "anthropic_model": "claude-sonnet-4-6",
            "task_max_retries": 2,
        }
    )
    extractors: dict[str, Any] = {}

    def extractor_for(name: str) -> Any:
        if name not in extractors:
            extractors[name] = build_extractor(settings, name)
        return extractors[name]

    return Collaborators(
        sessions=sessions,
        s3=bucket_with_queue.s3,
        extractor_for=extractor_for,
        prices=load_price_table(),
        settings=settings,
    )


def process_document(deps: Collaborators, document_id: int) -> DocumentStatus | Stage | None:
    """The message each stage's worker would get next: prepare, then extract (a retry of a
    document already prepared finds nothing to prepare and goes straight to extract)."""
    outcome = prepare_document(deps, document_id)
    if outcome is Stage.EXTRACT or outcome is None:
        return extract_document(deps, document_id)
    return outcome


def _upload(deps: Collaborators, bucket: str, key: str, body: bytes, provider: str) -> int:
    put = deps.s3.put_object(Bucket=bucket, Key=key, Body=body)
    ref = ObjectRef(bucket=bucket, key=key, version=put["ETag"].strip('"'))
    with transaction(deps.sessions) as session:
        document_id, created = repo.register_document(session, ref, "invoice", provider)
    assert created
    return document_id


def _calls(deps: Collaborators, document_id: int) -> list[VlmCall]:
    with deps.sessions() as session:
        return list(
            session.execute(
                select(VlmCall).where(VlmCall.document_id == document_id).order_by(VlmCall.id)
            ).scalars()
        )


def _document(deps: Collaborators, document_id: int) -> Document:
    with deps.sessions() as session:
        doc = session.get(Document, document_id)
        assert doc is not None
        return doc


def test_anthropic_result_and_cost_rows(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(11)
    fake_model_server.fields = invoice.expected()
    doc_id = _upload(deps, bucket_with_queue.bucket, "in/a b.pdf", render_pdf(invoice), "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    with deps.sessions() as session:
        extraction = session.execute(
            select(Extraction).where(Extraction.document_id == doc_id)
        ).scalar_one()
        row = session.execute(
            text(
                "SELECT invoice_number, total, cost_usd FROM invoice_results WHERE document_id=:d"
            ),
            {"d": doc_id},
        ).one()
    assert extraction.valid and extraction.data is not None
    assert extraction.data["total"] == invoice.expected()["total"]
    assert row.invoice_number == invoice.invoice_number and row.total == invoice.total
    [call] = _calls(deps, doc_id)
    assert call.outcome == "ok" and call.request_id and call.input_tokens > 0
    expected = deps.prices.cost(
        "anthropic",
        "claude-sonnet-4-6",
        Usage(
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cache_creation_input_tokens=call.cache_creation_input_tokens,
            cache_read_input_tokens=call.cache_read_input_tokens,
        ),
    )
    assert call.cost_usd == expected and row.cost_usd == expected > 0
    # The page text layer went with the image.
    assert invoice.invoice_number in fake_model_server.last_request.prompt_text()

    # A redelivered message finds the document final and calls no model again.
    assert process_document(deps, doc_id) is None
    assert fake_model_server.request_count == 1


def test_invalid_output_is_re_asked_with_the_errors_and_both_calls_are_costed(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(12)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script(reply(fields={**invoice.expected(), "currency": "EURO"}))
    doc_id = _upload(deps, bucket_with_queue.bucket, "reask.pdf", render_pdf(invoice), "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    first, second = _calls(deps, doc_id)
    assert first.outcome == "invalid_output" and "currency" in (first.error_message or "")
    assert second.outcome == "ok"
    assert first.cost_usd and second.cost_usd and first.cost_usd > 0
    assert "currency" in fake_model_server.last_request.prompt_text()  # the feedback was sent


def test_truncated_output_is_never_a_result(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(13)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script(reply("max_tokens"))
    doc_id = _upload(deps, bucket_with_queue.bucket, "cut.pdf", render_pdf(invoice), "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    first, second = _calls(deps, doc_id)
    assert first.outcome == "truncated" and first.stop_reason == "max_tokens"
    budgets = [r.max_tokens for r in fake_model_server.requests]
    assert budgets[1] is not None and budgets[0] is not None and budgets[1] > budgets[0]
    assert second.outcome == "ok"


def test_rate_limit_gives_the_document_back_with_the_failed_call_recorded(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(14)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script(error(429, retry_after=7))
    doc_id = _upload(deps, bucket_with_queue.bucket, "busy.pdf", render_pdf(invoice), "anthropic")

    with pytest.raises(TransientError) as info:
        process_document(deps, doc_id)
    assert info.value.category is ErrorCategory.PROVIDER_RATE_LIMITED
    assert info.value.retry_after_s == 7
    doc = _document(deps, doc_id)
    assert doc.status == "pending" and doc.error_category == "provider_rate_limited"
    [failed] = _calls(deps, doc_id)
    assert failed.outcome == "error" and failed.cost_usd == 0 and failed.request_id

    assert process_document(deps, doc_id) is DocumentStatus.DONE
    assert [c.outcome for c in _calls(deps, doc_id)] == ["error", "ok"]


def test_corrupt_file_fails_with_a_clear_error_and_a_dead_letter(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    body = corrupt_pdf(render_pdf(make_invoice(15)))
    doc_id = _upload(deps, bucket_with_queue.bucket, "corrupt.pdf", body, "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.FAILED

    doc = _document(deps, doc_id)
    assert doc.status == "failed" and doc.error_category == "bad_input"
    assert doc.error_message and "PDF" in doc.error_message
    with deps.sessions() as session:
        letter = session.execute(
            select(DeadLetter).where(DeadLetter.document_id == doc_id)
        ).scalar_one()
    assert letter.error_category == "bad_input"
    assert fake_model_server.request_count == 0


def test_local_extractor_on_a_real_sample_costs_zero_and_is_still_a_row(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, samples_dir: Any
) -> None:
    body = (samples_dir / "docs" / "sample-05.pdf").read_bytes()
    doc_id = _upload(deps, bucket_with_queue.bucket, "samples/sample-05.pdf", body, "local")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    [call] = _calls(deps, doc_id)
    assert call.provider == "local" and call.cost_usd == Decimal(0) and call.outcome == "ok"
    with deps.sessions() as session:
        data = session.execute(
            select(Extraction.data).where(Extraction.document_id == doc_id)
        ).scalar_one()
    assert data is not None and data["invoice_number"] == "2014-03"
    assert Decimal(data["total"]) == Decimal("1005.55")
