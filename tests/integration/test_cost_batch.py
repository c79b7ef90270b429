"""Batch mode on real Postgres and S3, with the fake provider's Message Batches endpoints driven
through the real SDK: non-urgent documents wait for batch answers at half price."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from decimal import Decimal

import pytest
from sqlalchemy import select

from pipeline.cost.batch import BatchRunner
from pipeline.cost.waiting import wake_documents
from pipeline.db.models import DeadLetter
from pipeline.domain import DocumentStatus, ObjectRef
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases.ingest import ingest_event_object
from pipeline.usecases.process import Collaborators
from tests.support.cost_helpers import batch_requests, upload, with_cost
from tests.support.fake_model_server import (
    FakeModelServer,
    batch_errored,
    batch_expired,
    reply,
)
from tests.support.pipeline_helpers import calls, document, process_document
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration

SONNET = "claude-sonnet-4-6"


class Woken:
    """The runner's wake-up: the documents are made due (as in the workers), and noted here
    instead of being sent to a broker."""

    def __init__(self, deps: Collaborators) -> None:
        self.deps = deps
        self.ids: list[int] = []

    def __call__(self, ids: Iterable[int]) -> None:
        wake_documents(
            self.deps.sessions, ids, lambda document_id, _stage: self.ids.append(document_id)
        )


def _runner(deps: Collaborators, woken: Woken, **kwargs: object) -> BatchRunner:
    return BatchRunner(
        sessions=deps.sessions,
        extractor_for=deps.extractor_for,
        prices=deps.prices,
        wake=woken,
        min_requests=1,
        **kwargs,  # type: ignore[arg-type]
    )


def _batch_deps(deps: Collaborators, server: FakeModelServer) -> Collaborators:
    return with_cost(deps, server, batch_routes="backfill/", page_cache=False)


def test_batch_results_land_with_the_discount_applied(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = _batch_deps(deps, fake_model_server)
    invoice = make_invoice(71)
    fake_model_server.fields = invoice.expected()
    doc = upload(deps, bucket_with_queue.bucket, "backfill/2019/a.pdf", render_pdf(invoice))

    assert process_document(deps, doc) is None  # waits for the batch; nothing failed
    [queued] = batch_requests(deps, doc)
    assert queued.status == "queued" and queued.params is not None
    waiting = document(deps, doc)
    assert (waiting.status, waiting.wait_reason) == ("pending", "batch")
    assert process_document(deps, doc) is None  # an early message does not start it
    assert fake_model_server.count("anthropic") == 0  # no direct call

    # The periodic task's body, run by hand from the command line against the same database.
    env = {
        **os.environ,
        "PAGEMILL_ANTHROPIC_API_KEY": "sk-test",
        "PAGEMILL_ANTHROPIC_BASE_URL": fake_model_server.anthropic_base_url,
        "PAGEMILL_BATCH_MIN_REQUESTS": "1",
        "PAGEMILL_S3_ENDPOINT_URL": deps.settings.s3_endpoint_url or "",
    }
    out = subprocess.run(
        [sys.executable, "-m", "workers", "batches", "--run"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "submitted 1 request(s) in 1 batch(es)" in out.stdout
    assert "1 answered" in out.stdout
    assert fake_model_server.count("batch_item") == 1

    assert process_document(deps, doc) is DocumentStatus.DONE  # resumed: the answer is there
    [call] = calls(deps, doc)
    assert call.service_tier == "batch" and call.outcome == "ok"
    # Sonnet: $3 in, $15 out per million; batch: half of that.
    standard = (Decimal(call.input_tokens) * 3 + Decimal(call.output_tokens) * 15) / 1_000_000
    assert call.cost_usd == (standard / 2).quantize(Decimal("0.00000001"))
    assert call.saved_batch_usd == call.cost_usd
    assert str(call.call_id).replace("-", "") == batch_requests(deps, doc)[0].call_id.hex
    assert fake_model_server.count("anthropic") == 0


def test_an_expired_batch_request_is_retried_in_a_new_batch(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = _batch_deps(deps, fake_model_server)
    invoice = make_invoice(72)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script_batch(batch_expired())
    doc = upload(deps, bucket_with_queue.bucket, "backfill/b.pdf", render_pdf(invoice))
    assert process_document(deps, doc) is None
    woken = Woken(deps)
    runner = _runner(deps, woken)

    first = runner.run_once()
    assert (first.submitted, first.retried, first.succeeded) == (1, 1, 0)
    assert woken.ids == []  # still waiting: nothing to resume with
    [request] = batch_requests(deps, doc)
    assert request.status == "queued" and request.attempts == 1

    second = runner.run_once()
    assert (second.submitted, second.succeeded) == (1, 1)
    assert woken.ids == [doc]
    assert process_document(deps, doc) is DocumentStatus.DONE

    expired, answered = calls(deps, doc)
    assert expired.outcome == "error" and expired.error_category == "timeout"
    assert "expired" in (expired.error_message or "")
    assert expired.cost_usd == 0 and expired.service_tier == "batch"  # not billed
    assert answered.outcome == "ok" and answered.service_tier == "batch"
    assert (expired.attempt, answered.attempt) == (1, 2)
    assert len(fake_model_server.batches) == 2


def test_a_batch_request_that_keeps_failing_is_dead_lettered_like_any_call(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = _batch_deps(deps, fake_model_server)
    invoice = make_invoice(73)
    fake_model_server.script_batch(batch_errored("overloaded_error"), batch_errored("api_error"))
    doc = upload(deps, bucket_with_queue.bucket, "backfill/c.pdf", render_pdf(invoice))
    assert process_document(deps, doc) is None
    woken = Woken(deps)
    runner = _runner(deps, woken, max_attempts=2)
    runner.run_once()
    report = runner.run_once()
    assert report.failed == 1 and woken.ids == [doc]

    assert process_document(deps, doc) is DocumentStatus.FAILED
    assert document(deps, doc).error_category == "provider_unavailable"
    with deps.sessions() as session:
        letters = session.execute(select(DeadLetter).where(DeadLetter.document_id == doc)).all()
    assert len(letters) == 1
    assert [c.outcome for c in calls(deps, doc)] == ["error", "error"]


def test_a_re_ask_of_a_batch_document_goes_through_the_batch_too(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = _batch_deps(deps, fake_model_server)
    invoice = make_invoice(74)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script_batch(reply(fields={**invoice.expected(), "currency": "EURO"}))
    doc = upload(deps, bucket_with_queue.bucket, "backfill/d.pdf", render_pdf(invoice))
    runner = _runner(deps, Woken(deps))

    assert process_document(deps, doc) is None
    runner.run_once()
    assert process_document(deps, doc) is None  # the answer was invalid: a re-ask is queued
    runner.run_once()
    assert process_document(deps, doc) is DocumentStatus.DONE

    first, second = calls(deps, doc)
    assert (first.purpose, first.outcome) == ("extract", "invalid_output")
    assert (second.purpose, second.outcome) == ("reask", "ok")
    assert {c.service_tier for c in (first, second)} == {"batch"}
    reask = [r for r in fake_model_server.requests if r.api == "batch_item"][1]
    assert "currency" in reask.prompt_text()  # the validation errors went with the re-ask
    assert fake_model_server.count("anthropic") == 0


def test_object_metadata_marks_an_upload_for_batch_and_overrides_the_prefix_routes(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = _batch_deps(deps, fake_model_server)  # backfill/ is a batch route
    s3, bucket = bucket_with_queue.s3, bucket_with_queue.bucket
    invoice = make_invoice(75)
    fake_model_server.fields = invoice.expected()
    body = render_pdf(invoice)
    ids: dict[str, int] = {}
    for key, metadata in (
        ("inbox/low.pdf", {"pagemill-priority": "low"}),
        ("backfill/rush.pdf", {"pagemill-priority": "urgent"}),
    ):
        put = s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
        ref = ObjectRef(bucket=bucket, key=key, version=put["ETag"].strip('"'))
        found = ingest_event_object(
            deps.sessions,
            s3,
            ref,
            routes=[],
            default_schema="invoice",
            provider="anthropic",
            read_metadata=True,
            enqueue=lambda _id: None,
        )
        assert found is not None
        ids[key] = found[0]

    assert process_document(deps, ids["inbox/low.pdf"]) is None  # waits for a batch
    assert len(batch_requests(deps, ids["inbox/low.pdf"])) == 1
    assert process_document(deps, ids["backfill/rush.pdf"]) is DocumentStatus.DONE
    assert calls(deps, ids["backfill/rush.pdf"])[0].service_tier == "standard"
