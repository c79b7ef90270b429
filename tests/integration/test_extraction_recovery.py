"""What the extract stage does with replies that are cut off, split over chunks, or lost: through
the real SDKs against the fake model server, with the document's rows in real Postgres."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from pipeline.costing import load_price_table
from pipeline.domain import DocumentStatus, Stage
from pipeline.errors import ErrorCategory, TransientError
from pipeline.extractors import build_extractor
from pipeline.ratelimit import make_rate_limiter
from pipeline.schemas.user import load_schema
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases import process
from pipeline.usecases.extract import ExtractOptions, Meter, chunked, extract_pages
from pipeline.usecases.process import Collaborators
from tests.support.fake_model_fixtures import NoRenderer, sample_page
from tests.support.fake_model_server import FakeModelServer, drop_connection, error, reply
from tests.support.pipeline_helpers import calls, document, upload
from tests.support.s3_fixtures import BucketWithQueue
from workers import devstack

pytestmark = pytest.mark.integration


def _with_settings(deps: Collaborators, **update: Any) -> Collaborators:
    settings = deps.settings.model_copy(update=update)
    return Collaborators(
        sessions=deps.sessions,
        s3=deps.s3,
        extractor_for=lambda name: build_extractor(settings, name),
        prices=deps.prices,
        settings=settings,
    )


# --- a reply cut off at its token limit (item 7) --------------------------------------------


def test_a_cut_off_reply_is_asked_again_with_twice_the_budget_it_had(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(71)
    deps = _with_settings(deps, anthropic_max_tokens=16_000)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script(reply("max_tokens"))
    doc_id = upload(deps, bucket_with_queue.bucket, "long.pdf", render_pdf(invoice), "anthropic")

    process.prepare_document(deps, doc_id, "prepare")
    assert process.extract_document(deps, doc_id, "extract") is DocumentStatus.DONE

    budgets = [r.max_tokens for r in fake_model_server.requests]
    assert budgets == [16_000, 32_000]


def test_a_server_without_a_budget_is_asked_for_twice_what_it_wrote(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    # An OpenAI-compatible server decides the limit itself (no max_tokens is sent): the retry
    # asks for twice the tokens it wrote before it cut the reply off.
    invoice = make_invoice(72)
    deps = _with_settings(
        deps,
        openai_base_url=fake_model_server.openai_base_url,
        openai_api_key=SecretStr("sk-test"),
        anthropic_max_tokens=16_000,  # another provider's budget: not this one's
    )
    fake_model_server.fields = invoice.expected()
    fake_model_server.script(reply("max_tokens"))
    doc_id = upload(deps, bucket_with_queue.bucket, "q.pdf", render_pdf(invoice), "openai_compat")

    process.prepare_document(deps, doc_id, "prepare")
    assert process.extract_document(deps, doc_id, "extract") is DocumentStatus.DONE

    first, second = fake_model_server.requests
    assert first.max_tokens is None
    [cut] = [c for c in calls(deps, doc_id) if c.outcome == "truncated"]
    assert cut.output_tokens > 0 and second.max_tokens == 2 * cut.output_tokens


def test_a_call_reserves_its_own_providers_budget_not_anthropics(
    deps: Collaborators,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: FakeModelServer,
    redis_broker: str,
) -> None:
    # An output-token limit of 10,000 a minute shared through Redis. A call to a server with no
    # budget of its own reserves the default guess (4,096), whatever Anthropic's budget (9,000)
    # says: while it runs, another worker can still reserve 5,000.
    prefix = f"test-reserve-{uuid.uuid4().hex}"
    spec = "openai_compat:*=otpm:10000"
    limiter = make_rate_limiter(spec, redis_broker, prefix=prefix, max_wait_s=0)
    other = make_rate_limiter(spec, redis_broker, prefix=prefix, max_wait_s=0)
    settings = deps.settings.model_copy(
        update={
            "openai_base_url": fake_model_server.openai_base_url,
            "openai_api_key": SecretStr("sk-test"),
            "anthropic_max_tokens": 9_000,
        }
    )
    deps = replace(
        deps,
        settings=settings,
        extractor_for=lambda name: build_extractor(settings, name),
        limiter=limiter,
    )
    invoice = make_invoice(75)
    fake_model_server.fields = invoice.expected()
    fake_model_server.latency = 2.0
    doc_id = upload(deps, bucket_with_queue.bucket, "r.pdf", render_pdf(invoice), "openai_compat")
    process.prepare_document(deps, doc_id, "prepare")
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(process.extract_document(deps, doc_id, "extract"))
    )
    worker.start()
    try:
        assert devstack.wait_for(lambda: fake_model_server.request_count == 1, 30, 0.02)
        permit = other.acquire("openai_compat", settings.openai_model, 0, 5_000)
        other.release(permit, None)
    finally:
        worker.join(30)
    assert outcome == [DocumentStatus.DONE]


# --- chunks merged as the schema says (item 8) ----------------------------------------------


def test_every_list_of_a_user_schema_is_merged_in_page_order(
    tmp_path: Path, fake_model_server: FakeModelServer, deps: Collaborators
) -> None:
    schema_file = tmp_path / "ledger.json"
    schema_file.write_text(
        json.dumps(
            {
                "title": "ledger",
                "type": "object",
                "x-merge-last": ["closing_balance"],
                "properties": {
                    "account": {"type": ["string", "null"]},
                    "opening_balance": {"type": ["string", "null"]},
                    "closing_balance": {"type": ["string", "null"]},
                    "entries": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"text": {"type": "string"}},
                        },
                    },
                    "stamps": {"type": "array", "items": {"type": "string"}},
                },
            }
        )
    )
    schema = load_schema(str(schema_file))
    fake_model_server.script(
        reply(fields={"account": "AC-1", "opening_balance": "10", "entries": [{"text": "a"}]}),
        reply(fields={"account": None, "closing_balance": "15", "entries": [{"text": "b"}]}),
        reply(
            fields={
                "account": "misread",
                "closing_balance": "20",
                "entries": [{"text": "c"}, {"text": "d"}],
                "stamps": ["PAID"],
            }
        ),
    )
    pages = [sample_page(i, text=f"page {i + 1}") for i in range(3)]

    result = extract_pages(
        deps.extractor_for("anthropic"),
        schema,
        chunked(pages, 1),
        NoRenderer(),
        load_price_table(),
        Meter(),
        ExtractOptions(pages_per_call=1),
    )

    assert result.data is not None
    assert [e["text"] for e in result.data["entries"]] == ["a", "b", "c", "d"]
    assert result.data["stamps"] == ["PAID"]
    assert result.data["account"] == "AC-1"  # from the first chunk that has it
    assert result.data["opening_balance"] == "10"
    assert result.data["closing_balance"] == "20"  # the schema says: from the last chunk


# --- a retry resumes after the last finished chunk (item 9) ---------------------------------


def test_a_retry_resumes_after_the_last_finished_chunk(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(73, items=60)
    pdf = render_pdf(invoice, rows_per_page=20)  # three pages, one call each
    deps = _with_settings(deps, pages_per_call=1)
    expected = invoice.expected()
    items = expected["line_items"]
    answers = [{**expected, "line_items": items[i * 20 : (i + 1) * 20]} for i in range(3)]
    fake_model_server.script(reply(fields=answers[0]), reply(fields=answers[1]), error(529))
    doc_id = upload(deps, bucket_with_queue.bucket, "three.pdf", pdf, "anthropic")
    assert process.prepare_document(deps, doc_id, "prepare") is Stage.EXTRACT

    with pytest.raises(TransientError):
        process.extract_document(deps, doc_id, "extract-1")
    assert fake_model_server.request_count == 3
    fake_model_server.script(reply(fields=answers[2]))
    assert process.extract_document(deps, doc_id, "extract-2") in (
        DocumentStatus.DONE,
        DocumentStatus.NEEDS_REVIEW,
    )

    # Only the chunk that failed was asked again; the result has every chunk's line items.
    assert fake_model_server.request_count == 4
    with deps.sessions() as session:
        data = session.execute(
            text("SELECT data FROM extractions WHERE document_id = :d"), {"d": doc_id}
        ).scalar_one()
        left = session.execute(
            text("SELECT count(*) FROM chunk_results WHERE document_id = :d"), {"d": doc_id}
        ).scalar_one()
    assert len(data["line_items"]) == 60
    assert left == 0  # checkpoints go when the document is final
    assert [c.outcome for c in calls(deps, doc_id)] == ["ok", "ok", "error", "ok"]


# --- a call lost after it was sent (item 10) ------------------------------------------------


def test_a_call_lost_after_it_was_sent_is_unpriced_not_free(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(74)
    fake_model_server.fields = invoice.expected()
    # The provider got the request and the connection died before the answer: it may bill it.
    # An overloaded answer (529) is an answer: not billed.
    fake_model_server.script(drop_connection(), error(529))
    doc_id = upload(deps, bucket_with_queue.bucket, "lost.pdf", render_pdf(invoice), "anthropic")
    process.prepare_document(deps, doc_id, "prepare")

    for attempt in ("extract-1", "extract-2"):
        with pytest.raises(TransientError) as caught:
            process.extract_document(deps, doc_id, attempt)
        assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE
    assert process.extract_document(deps, doc_id, "extract-3") is DocumentStatus.DONE

    lost, overloaded, ok = calls(deps, doc_id)
    assert lost.outcome == "error" and lost.cost_usd is None
    assert overloaded.outcome == "error" and overloaded.cost_usd == Decimal(0)
    assert ok.outcome == "ok" and ok.cost_usd is not None and ok.cost_usd > 0
    with deps.sessions() as session:
        unpriced = session.execute(
            text("SELECT unpriced_calls FROM document_costs WHERE document_id = :d"),
            {"d": doc_id},
        ).scalar_one()
    assert unpriced == 1
    assert document(deps, doc_id).status == "done"
