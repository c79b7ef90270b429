"""Cost control on real Postgres, the S3 server over HTTP and the fake provider through the real
SDKs: page cache, the document's own budget, the model cascade, prompt caching where it pays,
estimates, and the reports (command and views with the same numbers)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from pipeline.costing import load_price_table
from pipeline.domain import DocumentStatus
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases.process import Collaborators
from tests.support.cost_helpers import done_but_a_copy, extraction, upload, with_cost
from tests.support.fake_model_server import FakeModelServer, RecordedRequest, Scripted, error, reply
from tests.support.pipeline_helpers import calls, document, process_document
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration

HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"


def _answers(seeds: list[int], misread_by: dict[int, str] | None = None) -> Any:
    """A responder answering each invoice by the number in its text layer; the models named in
    `misread_by` (seed -> model prefix) misread that invoice's total."""
    invoices = {make_invoice(seed).invoice_number: seed for seed in seeds}
    misread_by = misread_by or {}

    def answer(request: RecordedRequest) -> Scripted | None:
        text_ = request.prompt_text()
        seed = next((s for number, s in invoices.items() if number in text_), None)
        if seed is None:
            return None
        fields = make_invoice(seed).expected()
        if (request.model or "").startswith(misread_by.get(seed, "-")):
            fields["total"] = str(Decimal(fields["total"]) + 90)  # breaks subtotal + tax
        return reply(fields=fields)

    return answer


# --- page cache -------------------------------------------------------------------------------


def test_a_re_upload_is_served_from_the_page_cache_at_cost_zero(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = with_cost(deps, fake_model_server)
    fake_model_server.responder = _answers([21])
    pdf = render_pdf(make_invoice(21))
    first = upload(deps, bucket_with_queue.bucket, "in/a.pdf", pdf)
    assert process_document(deps, first) is DocumentStatus.DONE
    [original] = calls(deps, first)
    assert original.cost_usd and original.cost_usd > 0 and original.purpose == "extract"
    requests_before = fake_model_server.count("anthropic")

    again = upload(deps, bucket_with_queue.bucket, "other-tenant/copy.pdf", pdf)
    assert done_but_a_copy(deps, again, process_document(deps, again))

    assert fake_model_server.count("anthropic") == requests_before  # no model call at all
    [hit] = calls(deps, again)
    assert hit.purpose == "cache_hit" and hit.outcome == "ok"
    assert hit.cost_usd == 0 and hit.input_tokens == hit.output_tokens == 0
    assert hit.cached_from_call_id == original.call_id
    assert hit.saved_page_cache_usd == original.cost_usd
    assert extraction(deps, again).data == extraction(deps, first).data


def test_the_page_cache_can_be_switched_off_per_schema(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = with_cost(deps, fake_model_server, page_cache_off="receipt, invoice")
    fake_model_server.responder = _answers([22])
    pdf = render_pdf(make_invoice(22))
    first = upload(deps, bucket_with_queue.bucket, "a.pdf", pdf)
    assert process_document(deps, first) is DocumentStatus.DONE
    again = upload(deps, bucket_with_queue.bucket, "b.pdf", pdf)
    assert done_but_a_copy(deps, again, process_document(deps, again))
    assert fake_model_server.count("anthropic") == 2


def test_a_re_upload_of_a_reviewed_document_needs_no_second_re_check(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    # The model reads a wrong total; the re-check (paid) reads it wrong again: review. The
    # re-upload gets the same checked answer from the cache, without a re-check.
    deps = with_cost(deps, fake_model_server)
    fake_model_server.responder = _answers([23], misread_by={23: "claude"})
    pdf = render_pdf(make_invoice(23))
    first = upload(deps, bucket_with_queue.bucket, "a.pdf", pdf)
    assert process_document(deps, first) is DocumentStatus.NEEDS_REVIEW
    assert [c.purpose for c in calls(deps, first)] == ["extract", "recheck"]
    paid = sum((c.cost_usd or Decimal(0) for c in calls(deps, first)), Decimal(0))

    again = upload(deps, bucket_with_queue.bucket, "b.pdf", pdf)
    assert process_document(deps, again) is DocumentStatus.NEEDS_REVIEW
    [hit] = calls(deps, again)
    assert hit.purpose == "cache_hit" and hit.saved_page_cache_usd == paid
    *checked, copy = extraction(deps, again).review_reasons
    assert checked == extraction(deps, first).review_reasons
    assert copy.startswith(f"possible duplicate of document {first} ")


# --- the document's own budget ----------------------------------------------------------------


def test_a_document_over_its_budget_goes_to_review_after_the_budget_not_after_n_retries(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    # What one call of a one-page invoice costs, measured on a similar invoice.
    probe = with_cost(deps, fake_model_server, page_budget_usd=None, page_budget_tokens=None)
    fake_model_server.responder = _answers([31, 32])
    measured = upload(probe, bucket_with_queue.bucket, "m.pdf", render_pdf(make_invoice(31)))
    assert process_document(probe, measured) is DocumentStatus.DONE
    [one] = calls(probe, measured)
    assert one.cost_usd is not None

    # Every answer is invalid; re-asks are allowed five times and retries six. The budget is
    # two and a half calls' worth.
    budget = (one.cost_usd * Decimal("2.5")).quantize(Decimal("0.000001"))
    deps = with_cost(
        deps,
        fake_model_server,
        page_budget_usd=budget,
        page_budget_tokens=None,
        max_reasks=5,
        page_cache=False,
    )
    invalid = {**make_invoice(32).expected(), "currency": "EURO"}
    fake_model_server.responder = lambda _r: reply(fields=invalid)
    # The first attempt: one invalid answer, then the provider fails on the re-ask (a retry).
    fake_model_server.script(reply(fields=invalid), error(500))
    doc = upload(deps, bucket_with_queue.bucket, "b.pdf", render_pdf(make_invoice(32)))
    with pytest.raises(Exception, match="500"):
        process_document(deps, doc)
    # The retry counts what the first attempt spent.
    assert process_document(deps, doc) is DocumentStatus.NEEDS_REVIEW

    made = calls(deps, doc)
    paid = [c for c in made if c.outcome != "error"]
    assert len(paid) == 2  # the budget allowed two answers; without it there would be six
    assert sum((c.cost_usd or Decimal(0) for c in paid), Decimal(0)) <= budget
    result = extraction(deps, doc)
    assert not result.valid
    assert any(r.startswith("budget:") for r in result.review_reasons)
    assert document(deps, doc).status == "needs_review"


# --- cascade ----------------------------------------------------------------------------------


def test_the_cascade_escalates_only_the_pages_that_fail_rules_or_grounding(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    seeds = [41, 42, 43, 44]
    deps = with_cost(deps, fake_model_server, cascade=f"invoice={HAIKU}>{SONNET}")
    fake_model_server.responder = _answers(seeds, misread_by={42: HAIKU, 44: HAIKU})
    docs = {
        seed: upload(deps, bucket_with_queue.bucket, f"{seed}.pdf", render_pdf(make_invoice(seed)))
        for seed in seeds
    }
    for doc in docs.values():
        assert process_document(deps, doc) is DocumentStatus.DONE

    for seed, doc in docs.items():
        made = calls(deps, doc)
        if seed in (42, 44):
            cheap, strong = made
            assert (cheap.model, cheap.purpose) == (HAIKU, "extract")
            assert (strong.model, strong.purpose) == (SONNET, "escalate")
            assert cheap.saved_cascade_usd == -cheap.cost_usd  # paid on top, saved nothing
            assert extraction(deps, doc).model == SONNET
        else:
            [cheap] = made
            assert (cheap.model, cheap.purpose) == (HAIKU, "extract")
            # Sonnet's prices are three times Haiku's for every kind of token.
            assert cheap.cost_usd is not None
            assert cheap.saved_cascade_usd == 2 * cheap.cost_usd
        data = extraction(deps, doc).data
        assert data is not None and data["total"] == make_invoice(seed).expected()["total"]

    with deps.sessions() as session:
        row = session.execute(
            text("SELECT cascade_pages, escalated_pages FROM cost_by_schema")
        ).one()
    assert (row.cascade_pages, row.escalated_pages) == (4, 2)


# --- prompt caching ---------------------------------------------------------------------------


def _prices_with_min_cache(tmp_path: Path, minimum: int) -> Path:
    table = json.loads(
        (Path(__file__).resolve().parents[2] / "pipeline/data/prices.json").read_text()
    )
    table["models"][SONNET]["min_cache_tokens"] = minimum
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    return path


@pytest.mark.parametrize("minimum", [512, 4096])
def test_prompt_caching_is_marked_only_where_it_pays_and_its_hit_rate_is_reported(
    deps: Collaborators,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: FakeModelServer,
    tmp_path: Path,
    minimum: int,
) -> None:
    # The invoice schema's fixed prefix is ~1,000 tokens: above a 512-token minimum, below 4,096.
    prices = load_price_table(_prices_with_min_cache(tmp_path, minimum))
    deps = with_cost(dataclasses.replace(deps, prices=prices), fake_model_server, shared_state=True)
    fake_model_server.cache_min_tokens = {SONNET: minimum}
    seeds = [51, 52, 53]
    fake_model_server.responder = _answers(seeds)
    for seed in seeds:
        doc = upload(deps, bucket_with_queue.bucket, f"{seed}.pdf", render_pdf(make_invoice(seed)))
        assert process_document(deps, doc) is DocumentStatus.DONE

    marked = [
        bool(r.cache_control_markers()) for r in fake_model_server.requests if r.api == "anthropic"
    ]
    with deps.sessions() as session:
        report = session.execute(
            text(
                "SELECT prompt_cache_marked, prompt_cache_hits, saved_prompt_cache_usd"
                " FROM cost_by_model"
            )
        ).one()
    if minimum > 1000:
        # Below the minimum the provider would silently cache nothing: never marked.
        assert marked == [False, False, False]
        assert (report.prompt_cache_marked, report.prompt_cache_hits) == (0, 0)
    else:
        # The first call has no traffic to predict reads (no premium for a one-off); with
        # traffic the second writes the cache and the third reads it.
        assert marked == [False, True, True]
        third = calls(deps, doc)[0]
        assert third.cache_read_input_tokens > 0 and third.saved_prompt_cache_usd > 0
        assert (report.prompt_cache_marked, report.prompt_cache_hits) == (2, 1)


# --- estimates and reports --------------------------------------------------------------------


def test_estimates_are_stored_beside_the_actuals_and_reports_agree_with_the_views(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = with_cost(deps, fake_model_server, cascade=f"invoice={HAIKU}>{SONNET}")
    seeds = [61, 62, 63]
    fake_model_server.responder = _answers(seeds, misread_by={62: HAIKU})
    for seed in seeds:
        pdf = render_pdf(make_invoice(seed))
        doc = upload(deps, bucket_with_queue.bucket, f"t{seed % 2}/{seed}.pdf", pdf)
        assert process_document(deps, doc) is DocumentStatus.DONE
    again = upload(deps, bucket_with_queue.bucket, "t9/copy.pdf", render_pdf(make_invoice(61)))
    assert done_but_a_copy(deps, again, process_document(deps, again))

    for doc_calls in (calls(deps, d) for d in range(1, 5)):
        for call in doc_calls:
            if call.purpose == "cache_hit":
                assert call.estimated_input_tokens is None
                continue
            # The image rule plus text and schema lands near what the provider counted.
            assert call.estimated_input_tokens is not None and call.estimated_cost_usd
            actual = call.input_tokens + call.cache_creation_input_tokens
            assert abs(call.estimated_input_tokens - actual) <= 0.15 * actual

    with deps.sessions() as session:
        accuracy = session.execute(
            text("SELECT model, calls, input_mean_abs_error FROM cost_estimates ORDER BY model")
        ).all()
    assert [(a.model, a.calls) for a in accuracy] == [(HAIKU, 3), (SONNET, 1)]
    assert all(a.input_mean_abs_error < Decimal("0.15") for a in accuracy)

    env = dict(os.environ)
    for by, view in (
        ("model", "cost_by_model"),
        ("prefix", "cost_by_prefix"),
        ("day", "cost_by_day"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "workers", "costs", "--by", by, "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        listed = json.loads(out.stdout)
        with deps.sessions() as session:
            rows = [dict(r) for r in session.execute(text(f"SELECT * FROM {view}")).mappings()]
        assert len(listed) == len(rows) > 0
        by_key = {tuple(str(r[k]) for k in _dims(by)): r for r in rows}
        for item in listed:
            row = by_key[tuple(item[k] for k in _dims(by))]
            for name in ("calls", "cache_hits", "escalated_pages", "batch_calls"):
                assert item[name] == row[name]
            for name in (
                "cost_usd",
                "saved_page_cache_usd",
                "saved_cascade_usd",
                "estimated_cost_usd",
            ):
                assert Decimal(item[name]) == Decimal(row[name]).quantize(Decimal("0.000001"))
                assert "E" not in item[name]  # money as plain decimals

    with deps.sessions() as session:
        prefixes = {r.prefix: r for r in session.execute(text("SELECT * FROM cost_by_prefix"))}
        totals = session.execute(
            text(
                "SELECT sum(cost_usd) AS cost, sum(saved_page_cache_usd) AS saved FROM cost_by_day"
            )
        ).one()
        paid = session.execute(text("SELECT sum(cost_usd) FROM vlm_calls")).scalar_one()
    bucket = bucket_with_queue.bucket
    assert set(prefixes) == {f"s3://{bucket}/t0/", f"s3://{bucket}/t1/", f"s3://{bucket}/t9/"}
    assert prefixes[f"s3://{bucket}/t9/"].cache_hits == 1
    assert totals.cost == paid and totals.saved > 0

    table = subprocess.run(
        [sys.executable, "-m", "workers", "costs", "--by", "schema", "--since", "1d"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "invoice" in table and "1/3" in table  # one of three cascade pages escalated


def _dims(by: str) -> tuple[str, ...]:
    return {"model": ("provider", "model"), "prefix": ("prefix",), "day": ("day",)}[by]
