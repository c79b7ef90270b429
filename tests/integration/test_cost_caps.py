"""Spending caps on real Postgres and the fake provider: a call that would go over is not made,
the document waits as budget_exceeded, and resumes when the cap is raised or the period rolls
over; caps are set at run time with `pagemill budget`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.cost import budget
from pipeline.cost.hooks import BudgetExceeded
from pipeline.db.cost_models import BudgetLedger
from pipeline.db.models import VlmCall
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases.process import Collaborators
from tests.support.cost_helpers import upload, with_cost
from tests.support.fake_model_server import FakeModelServer, RecordedRequest, Scripted, reply
from tests.support.pipeline_helpers import calls, document, process_document
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration


def _pagemill(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "workers", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def _answers(seeds: list[int]) -> object:
    invoices = {make_invoice(seed).invoice_number: seed for seed in seeds}

    def answer(request: RecordedRequest) -> Scripted | None:
        text_ = request.prompt_text()
        seed = next((s for number, s in invoices.items() if number in text_), None)
        return None if seed is None else reply(fields=make_invoice(seed).expected())

    return answer


def test_a_daily_cap_stops_calls_the_work_waits_and_resumes_when_the_cap_is_raised(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = with_cost(deps, fake_model_server)
    fake_model_server.responder = _answers([91, 92])  # type: ignore[assignment]
    bucket = bucket_with_queue.bucket
    first = upload(deps, bucket, "a.pdf", render_pdf(make_invoice(91)))
    assert process_document(deps, first) is DocumentStatus.DONE
    [paid] = calls(deps, first)
    assert paid.cost_usd is not None

    # Today has spent one call; the cap leaves room for a fifth of another.
    cap = (paid.cost_usd * Decimal("1.2")).quantize(Decimal("0.000001"))
    assert "0 document(s) resumed" in _pagemill("budget", "set", "day", str(cap))
    requests = fake_model_server.count("anthropic")
    second = upload(deps, bucket, "b.pdf", render_pdf(make_invoice(92)))

    assert process_document(deps, second) is None  # the call is not made
    assert fake_model_server.count("anthropic") == requests
    held = document(deps, second)
    assert (held.status, held.wait_reason) == ("pending", "budget_exceeded")
    assert held.retries == 0 and held.not_before is not None
    assert "day cap" in (held.error_message or "")
    assert calls(deps, second) == []  # no row: nothing was sent, nothing charged
    shown = json.loads(_pagemill("budget", "show", "--format", "json"))
    assert shown["waiting_documents"] == 1
    assert Decimal(shown["caps"][0]["spent_usd"]) == paid.cost_usd.quantize(Decimal("0.000001"))
    assert process_document(deps, second) is None  # a message before the wait ends: nothing

    assert "1 document(s) resumed" in _pagemill("budget", "set", "day", "10")
    assert process_document(deps, second) is DocumentStatus.DONE
    done = document(deps, second)
    assert done.wait_reason is None and done.retries == 0

    # The ledger holds the actual costs, not the estimates the calls were charged with.
    with deps.sessions() as session:
        spent = session.execute(select(BudgetLedger.spent_usd)).scalar_one()
        paid_total = session.execute(select(func.sum(VlmCall.cost_usd))).scalar_one()
    assert spent == paid_total


def test_a_tenant_cap_holds_only_that_tenants_documents(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = with_cost(deps, fake_model_server)
    fake_model_server.responder = _answers([93, 94])  # type: ignore[assignment]
    bucket = bucket_with_queue.bucket
    _pagemill("budget", "set", "month", "0", "--prefix", f"{bucket}/tenant-a/")
    held = upload(deps, bucket, "tenant-a/x.pdf", render_pdf(make_invoice(93)))
    free = upload(deps, bucket, "tenant-b/y.pdf", render_pdf(make_invoice(94)))

    assert process_document(deps, held) is None
    assert document(deps, held).wait_reason == "budget_exceeded"
    assert "month cap" in (document(deps, held).error_message or "")
    assert process_document(deps, free) is DocumentStatus.DONE

    assert "1 document(s) resumed" in _pagemill(
        "budget", "remove", "month", "--prefix", f"s3://{bucket}/tenant-a/"
    )
    assert process_document(deps, held) is DocumentStatus.DONE


def test_concurrent_calls_never_take_a_cap_over_together(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        budget.set_cap(session, "day", "", Decimal("1.00"))
    outcomes: list[str] = []
    start = threading.Barrier(12)

    def charge() -> None:
        start.wait()
        try:
            with transaction(sessions) as session:
                budget.charge_caps(session, "s3://b/k.pdf", Decimal("0.30"), recheck_s=60)
            outcomes.append("charged")
        except BudgetExceeded:
            outcomes.append("held")

    threads = [threading.Thread(target=charge) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("charged") == 3
    with sessions() as session:
        assert session.execute(select(BudgetLedger.spent_usd)).scalar_one() == Decimal("0.90")


@pytest.mark.parametrize(
    ("period", "now", "expected"),
    [
        # Near the rollover the wait ends with the period.
        ("day", datetime(2026, 12, 4, 23, 59, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC)),
        ("month", datetime(2026, 12, 31, 23, 0, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        # Otherwise it is checked again after the recheck interval (a cap raised by SQL).
        ("day", datetime(2026, 12, 4, 12, 0, tzinfo=UTC), datetime(2026, 12, 4, 13, 0, tzinfo=UTC)),
    ],
)
def test_the_wait_ends_when_the_period_rolls_over(
    sessions: sessionmaker[Session], period: str, now: datetime, expected: datetime
) -> None:
    with transaction(sessions) as session:
        budget.set_cap(session, period, "", Decimal("0"))
    with pytest.raises(BudgetExceeded) as info, transaction(sessions) as session:
        budget.charge_caps(session, "s3://b/k.pdf", Decimal("0.01"), recheck_s=3600, now=now)
    assert info.value.until == expected
    # The new period's ledger starts empty: the same call fits there.
    after = expected + timedelta(seconds=1)
    with transaction(sessions) as session:
        budget.set_cap(session, period, "", Decimal("0.05"))
        assert budget.charge_caps(session, "s3://b/k.pdf", Decimal("0.01"), recheck_s=60, now=after)
    with sessions() as session:
        starts = set(session.execute(select(BudgetLedger.period_start)).scalars())
    assert budget.period_start(period, after) in starts
