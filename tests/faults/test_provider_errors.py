"""A 429 storm and a 529 outage at the model provider: every document still finishes, paid once.

What it proves, on the real stack (intake, Celery worker, fake Anthropic API over HTTP):

One stack, two phases, each reported on its own:

* 429 storm: half of all model calls (seeded) answer 429 with `retry-after: 1`, with a shared
  rate limit configured (so the shared cooldown is in play). Every document ends `done`. Each
  429 is one vlm_calls row with outcome 'error' and category provider_rate_limited, carrying the
  provider's request id; every request the provider saw is recorded exactly once; error rows
  cost nothing and carry no tokens, 'ok' rows are priced; no document has two 'ok' calls; and a
  document's next attempt after a 429 never comes sooner than the retry-after.
* 529 outage: then the provider answers the next 12 model calls with 529 (overloaded), so
  documents fail several attempts in a row, longer than one retry. All end `done`; the 12 errors
  are rows with category provider_unavailable; the same accounting holds.
"""

from __future__ import annotations

import itertools

import pytest

from tests.faults.harness import FaultStack, Figures, check_invariants, report, wait_for
from tests.support.fake_model_server import RecordedRequest, error

pytestmark = pytest.mark.faults

LATENCY_S = 0.3


def _check_accounting(figures: Figures, category: str) -> None:
    calls, requests = figures["_calls"], figures["_requests"]
    # Every request the provider received is one vlm_calls row, found by its request id (but
    # for tasks stopped by the short time limits, see FaultStack.time_limit_hits).
    recorded = [str(c["request_id"]) for c in calls]
    sent = {r.request_id for r in requests}
    assert len(recorded) == len(set(recorded)), "a provider request recorded twice"
    assert set(recorded) <= sent, "a vlm_calls row for a request the provider never saw"
    assert len(sent) - len(recorded) <= figures["time_limit_hits"], figures
    errors = [c for c in calls if c["outcome"] == "error"]
    assert errors, "the provider fault never happened"
    assert {c["error_category"] for c in errors} == {category}
    assert all(c["request_id"] for c in errors)
    assert figures["priced_error_calls"] == 0, "an error row carries cost or tokens"
    assert figures["unpriced_ok_calls"] == 0, "an 'ok' call without its cost"


def test_rate_limit_storm_then_overload_outage(fault_stack: FaultStack) -> None:
    stack = fault_stack
    # A shared limit that never binds here: it only adds the shared 429 cooldown.
    stack.env["PAGEMILL_RATE_LIMITS"] = "anthropic:*=rpm:6000,inflight:8"
    stack.set_latency(LATENCY_S)
    worker = stack.spawn_worker("worker", beat=True)
    ingest = stack.spawn_ingest()
    stack.wait_ready(worker, ingest)
    stack.warm_up(2)

    # Phase 1: half of all calls answer 429 with retry-after: 1.
    stack.server.set_fault_rate(0.5, status=429, retry_after=1, seed=7)
    storm = [stack.upload(f"storm/invoice-{n}.pdf", seed=4100 + n) for n in range(6)]
    stack.wait_final(storm, timeout=120)
    stack.server.set_fault_rate(0.0)
    figures = stack.figures("provider_429_storm", prefix="storm/", fault_rate=0.5)
    figures["min_gap_after_429_s"] = _min_gap_after_error(stack, figures)
    report(figures)

    check_invariants(figures)
    assert figures["done"] == len(storm) == figures["pushed"]
    _check_accounting(figures, "provider_rate_limited")
    assert figures["error_categories"]["provider_rate_limited"] >= 3
    # retry-after: 1 is a floor for the document's next attempt (0.1 s of clock slack).
    assert figures["min_gap_after_429_s"] >= 0.9

    # Phase 2: the next 12 calls answer 529 (overloaded), longer than one retry.
    outage = 12
    stack.server.script(*[error(529) for _ in range(outage)])
    down = [stack.upload(f"outage/invoice-{n}.pdf", seed=4200 + n) for n in range(4)]
    stack.wait_final(down, timeout=120)
    assert wait_for(lambda: stack.server.pending_scripts == 0, 5)
    figures = stack.figures("provider_529_outage", prefix="outage/", scripted_529=outage)
    report(figures)

    check_invariants(figures)
    assert figures["done"] == len(down) == figures["pushed"]
    _check_accounting(figures, "provider_unavailable")
    assert figures["error_categories"] == {"provider_unavailable": outage}
    # 12 errors over 4 documents: at least one document failed 3 attempts in a row.
    assert figures["max_requests_per_document"] >= 4

    # Nothing called the model again for any finished document, in either phase.
    everything = stack.figures("provider_errors_all")
    check_invariants(everything)
    assert everything["done"] == everything["pushed"]


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
