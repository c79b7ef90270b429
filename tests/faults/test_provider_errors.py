"""A 429 storm, and a provider overloaded (529) for several times the retry budget: every
document still finishes, paid once, and nothing is dead-lettered.

What it proves, on the real stack (intake, the bare `pagemill worker`, fake Anthropic API over
HTTP):

* 429 storm: half of all model calls (seeded) answer 429 with `retry-after: 1`, with no rate
  limits configured (the shared cooldown works without them, issue 10 item 13). Every document
  ends `done`. Each 429 is one vlm_calls row with outcome 'error' and category
  provider_rate_limited, carrying the provider's request id; every request the provider saw is
  recorded exactly once; error rows cost nothing and carry no tokens, 'ok' rows are priced; no
  document has two 'ok' calls; and a document's next attempt after a 429 never comes sooner
  than the retry-after.
* 529 outage: while documents are in flight, every model call answers 529 (overloaded) for
  PAGEMILL_FAULT_OUTAGE_S (45 s in the suite, where the retry budget is scaled to ~9 s). The
  outage uses up no document's retries (item 3): documents wait, trying again with a capped
  backoff, and all end `done` once the provider is back; none failed, none dead-lettered, each
  page paid once; the errors are rows with category provider_unavailable that cost 0.
"""

from __future__ import annotations

import itertools
import time

import pytest
from sqlalchemy import text

from tests.faults.harness import (
    OUTAGE_S,
    FaultStack,
    Figures,
    check_invariants,
    no_crashes,
    no_waiting_failures,
    outage_settings,
    outage_timeout,
    report,
    wait_for,
)
from tests.support.fake_model_server import RecordedRequest

pytestmark = pytest.mark.faults

LATENCY_S = 0.3


def _check_accounting(figures: Figures, category: str) -> None:
    calls, requests = figures["_calls"], figures["_requests"]
    # Every request the provider received is one vlm_calls row, found by its request id (but
    # for tasks stopped by a time limit, see FaultStack.time_limit_hits).
    recorded = [str(c["request_id"]) for c in calls]
    sent = {r.request_id for r in requests}
    assert len(recorded) == len(set(recorded)), "a provider request recorded twice"
    assert set(recorded) <= sent, "a vlm_calls row for a request the provider never saw"
    assert len(sent) - len(recorded) <= figures["time_limit_hits"], figures
    errors = [c for c in calls if c["outcome"] == "error"]
    assert errors, "the provider fault never happened"
    assert {c["error_category"] for c in errors} == {category}
    assert all(c["request_id"] for c in errors)
    # An error the provider answered is not billed: cost 0, no tokens (never NULL: it is known).
    assert all(c["cost_usd"] == 0 for c in errors)
    assert figures["priced_error_calls"] == 0, "an error row carries cost or tokens"
    assert figures["unpriced_ok_calls"] == 0, "an 'ok' call without its cost"


def test_rate_limit_storm(fault_stack: FaultStack) -> None:
    stack = fault_stack
    stack.set_latency(LATENCY_S)
    stack.start_bare_supervised(extract=8)

    stack.server.set_fault_rate(0.5, status=429, retry_after=1, seed=7)
    storm = [stack.upload(f"storm/invoice-{n}.pdf", seed=4100 + n) for n in range(6)]
    stack.wait_final(storm, timeout=120)
    stack.server.set_fault_rate(0.0)
    figures = stack.figures("provider_429_storm", prefix="storm/", fault_rate=0.5)
    figures["min_gap_after_429_s"] = _min_gap_after_error(stack, figures)
    report(figures)

    no_crashes(stack)
    check_invariants(figures)
    no_waiting_failures(figures)
    _check_accounting(figures, "provider_rate_limited")
    assert figures["error_categories"]["provider_rate_limited"] >= 3
    # retry-after: 1 is a floor for the document's next attempt (0.1 s of clock slack).
    assert figures["min_gap_after_429_s"] >= 0.9


def test_provider_overloaded_longer_than_the_retry_budget(fault_stack: FaultStack) -> None:
    stack = fault_stack
    stack.use_settings(outage_settings())
    slow = 2.0
    stack.set_latency(slow)
    stack.start_bare_supervised(extract=8)

    before = [stack.upload(f"outage/before-{n}.pdf", seed=4200 + n) for n in range(6)]
    assert wait_for(lambda: len(stack.in_flight(slow, before)) >= 2, 60, 0.05), stack.tails()
    stack.set_latency(LATENCY_S)
    stack.server.set_fault_rate(1.0, status=529)  # from the next request on
    started = time.monotonic()
    during = [stack.upload(f"outage/during-{n}.pdf", seed=4300 + n) for n in range(4)]
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))
    stack.server.set_fault_rate(0.0)
    outage_s = round(time.monotonic() - started, 1)
    ended = time.monotonic()

    keys = before + during
    stack.wait_final(keys, timeout=outage_timeout())
    figures = stack.figures(
        "provider_529_outage",
        prefix="outage/",
        outage_s=outage_s,
        final_after_outage_s=round(time.monotonic() - ended, 1),
    )
    report(figures)

    no_crashes(stack)
    check_invariants(figures)
    no_waiting_failures(figures)
    _check_accounting(figures, "provider_unavailable")
    # The outage outlasted the retry budget: some document was tried more times than it has
    # retries (6), and still waited rather than failing. A try is a failed call, or a hold
    # while the provider's circuit was open (no call at all: pipeline/cost/circuit.py).
    with stack.engine.connect() as conn:
        tries = conn.execute(
            text("SELECT max(attempts) FROM documents WHERE bucket = :b"),
            {"b": stack.bucket.bucket},
        ).scalar_one()
    assert tries > 7, figures


def _min_gap_after_error(stack: FaultStack, figures: Figures) -> float | None:
    """Shortest time between a request answered with an error and the same document's next."""
    calls, requests = figures["_calls"], figures["_requests"]
    failed = {c["request_id"] for c in calls if c["outcome"] == "error"}
    by_key: dict[str, list[RecordedRequest]] = {}
    for request in requests:
        by_key.setdefault(stack.book.key_for(request) or "?", []).append(request)
    gaps = []
    for items in by_key.values():
        ordered = sorted(items, key=lambda r: r.received_at)
        for prev, nxt in itertools.pairwise(ordered):
            if prev.request_id in failed:
                # The error was sent after the latency; the retry-after counts from then.
                gaps.append(nxt.received_at - (prev.received_at + LATENCY_S))
    return round(min(gaps), 3) if gaps else None
