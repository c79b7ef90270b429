"""The document use case against real Postgres, the S3 server over HTTP and the fake model API."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text

from pipeline.costing import ModelPrice, PriceTable
from pipeline.db.models import DeadLetter, Extraction
from pipeline.domain import DocumentStatus
from pipeline.errors import ErrorCategory, TransientError
from pipeline.synthetic import corrupt_pdf, make_invoice, render_pdf
from pipeline.usecases import process
from pipeline.usecases.process import Collaborators
from tests.support.fake_model_server import FakeModelServer, error, reply
from tests.support.pipeline_helpers import calls, document, process_document, upload
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration


def test_anthropic_result_and_cost_rows(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(11)
    fake_model_server.fields = invoice.expected()
    # A price table of the test's own: per million tokens, input 1, output 2, cache write 4,
    # cache read 8 (distinct, so that a token counted at the wrong price shows).
    prices = PriceTable(
        {
            "claude-sonnet-4-6": ModelPrice(
                input=Decimal(1), output=Decimal(2), cache_write=Decimal(4), cache_read=Decimal(8)
            )
        }
    )
    deps = replace(deps, prices=prices)
    fake_model_server.script(
        reply(usage={"cache_creation_input_tokens": 700, "cache_read_input_tokens": 300})
    )
    doc_id = upload(deps, bucket_with_queue.bucket, "in/a b.pdf", render_pdf(invoice), "anthropic")

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
    [call] = calls(deps, doc_id)
    assert call.outcome == "ok" and call.request_id and call.input_tokens > 0
    # Scripted: the answer reports prompt-cache writes and reads too.
    assert (call.cache_creation_input_tokens, call.cache_read_input_tokens) == (700, 300)
    expected = (
        Decimal(
            call.input_tokens * 1
            + call.output_tokens * 2
            + call.cache_creation_input_tokens * 4
            + call.cache_read_input_tokens * 8
        )
        / 1_000_000
    )
    assert call.cost_usd == expected and row.cost_usd == expected
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
    doc_id = upload(deps, bucket_with_queue.bucket, "reask.pdf", render_pdf(invoice), "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    first, second = calls(deps, doc_id)
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
    doc_id = upload(deps, bucket_with_queue.bucket, "cut.pdf", render_pdf(invoice), "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    first, second = calls(deps, doc_id)
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
    doc_id = upload(deps, bucket_with_queue.bucket, "busy.pdf", render_pdf(invoice), "anthropic")

    with pytest.raises(TransientError) as info:
        process_document(deps, doc_id)
    assert info.value.category is ErrorCategory.PROVIDER_RATE_LIMITED
    assert info.value.retry_after_s == 7
    doc = document(deps, doc_id)
    assert doc.status == "pending" and doc.error_category == "provider_rate_limited"
    [failed] = calls(deps, doc_id)
    # A 429 is an answer: not billed, so it costs 0 (known), not NULL (unknown).
    assert failed.outcome == "error" and failed.cost_usd == 0 and failed.request_id

    assert process_document(deps, doc_id) is DocumentStatus.DONE
    assert [c.outcome for c in calls(deps, doc_id)] == ["error", "ok"]


def test_corrupt_file_fails_with_a_clear_error_and_a_dead_letter(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    body = corrupt_pdf(render_pdf(make_invoice(15)))
    doc_id = upload(deps, bucket_with_queue.bucket, "corrupt.pdf", body, "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.FAILED

    doc = document(deps, doc_id)
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
    doc_id = upload(deps, bucket_with_queue.bucket, "samples/sample-05.pdf", body, "local")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    [call] = calls(deps, doc_id)
    assert call.provider == "local" and call.cost_usd == Decimal(0) and call.outcome == "ok"
    with deps.sessions() as session:
        data = session.execute(
            select(Extraction.data).where(Extraction.document_id == doc_id)
        ).scalar_one()
    assert data is not None and data["invoice_number"] == "2014-03"
    assert Decimal(data["total"]) == Decimal("1005.55")


def test_a_stage_that_died_after_storing_its_result_finishes_without_calling_again(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(14)
    fake_model_server.fields = invoice.expected()
    doc_id = upload(deps, bucket_with_queue.bucket, "died.pdf", render_pdf(invoice), "anthropic")
    assert process_document(deps, doc_id) is DocumentStatus.DONE
    assert fake_model_server.request_count == 1

    def crash_after_store(review_reasons: str) -> None:
        # What a worker killed between storing the result and finishing leaves behind.
        with deps.sessions.begin() as session:
            session.execute(
                text(
                    "UPDATE documents SET status = 'processing', stage = 'extract',"
                    " lease_until = now() - interval '1 s', lease_owner = 'dead-task',"
                    " finished_at = NULL WHERE id = :d"
                ),
                {"d": doc_id},
            )
            session.execute(
                text(
                    "UPDATE extractions SET review_reasons = CAST(:r AS jsonb)"
                    " WHERE document_id = :d"
                ),
                {"d": doc_id, "r": review_reasons},
            )

    crash_after_store("[]")
    assert process.extract_document(deps, doc_id, "new-task") is DocumentStatus.DONE
    crash_after_store('["ungrounded: total was not found on any page"]')
    assert process.extract_document(deps, doc_id, "new-task") is DocumentStatus.NEEDS_REVIEW
    assert fake_model_server.request_count == 1  # the stored result was reused both times
    assert document(deps, doc_id).finished_at is not None


def test_a_call_is_a_row_from_before_the_request_until_its_outcome(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(15)
    fake_model_server.fields = invoice.expected()
    fake_model_server.latency = 1.5
    doc_id = upload(deps, bucket_with_queue.bucket, "slow.pdf", render_pdf(invoice), "anthropic")
    process.prepare_document(deps, doc_id, "prepare-task")
    seen: list[tuple[str, ...]] = []

    def rows() -> list[Any]:
        with deps.sessions() as session:
            return list(
                session.execute(
                    text(
                        "SELECT call_id, outcome, cost_usd, input_tokens FROM vlm_calls"
                        " WHERE document_id = :d"
                    ),
                    {"d": doc_id},
                )
            )

    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            current = rows()
            if current:
                seen.append(tuple(str(v) for v in current[0]))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert process.extract_document(deps, doc_id, "extract-task") is DocumentStatus.DONE
    finally:
        done.set()
        watcher.join(5)

    # The row was there first, while the 1.5 s request was out: a worker killed then leaves it.
    assert seen and seen[0][1] == "started" and seen[0][2] == "None" and seen[0][3] == "0"
    [final] = rows()  # the same row took the outcome: one call, one row
    assert str(final.call_id) == seen[0][0]
    assert final.outcome == "ok" and final.cost_usd > 0 and final.input_tokens > 0
